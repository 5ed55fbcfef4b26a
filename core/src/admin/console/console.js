// Sluice console: local times and live approvals. The pages work without it.
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) {
        t.textContent = d.toLocaleString();
        t.title = t.getAttribute("datetime").replace("T", " ").replace("Z", " UTC");
      }
    });
  }
  function live() {
    var box = document.getElementById("approvals");
    if (!box || !window.EventSource) return;
    var url = box.getAttribute("data-live");
    var events = new EventSource("/console/events");
    events.addEventListener("approvals", function () {
      // Keep what someone is typing: refresh only when no form field is focused.
      var active = document.activeElement;
      if (active && box.contains(active) && active.tagName === "INPUT") return;
      fetch(url, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { box.innerHTML = html; localTimes(box); })
        .catch(function () {});
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    live();
  });
})();
