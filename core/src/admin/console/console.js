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
    var since = 0;
    var events = new EventSource("/console/events");
    // Never move a button under the pointer or take a half-typed comment:
    // while a field of the list has focus or the pointer is on a vote's
    // buttons, the refresh waits, for ten seconds at most.
    function busy() {
      var voting = box.querySelector("form.vote:hover");
      return !!voting || box.contains(document.activeElement);
    }
    function refresh() {
      if (busy() && Date.now() - since < 10000) {
        if (!since) since = Date.now();
        setTimeout(refresh, 500);
        return;
      }
      since = 0;
      fetch(url, { credentials: "same-origin", redirect: "error" })
        .then(function (r) {
          if (r.status === 401) events.close();
          return r.text();
        })
        .then(function (html) {
          // Comments being typed survive the refresh, focus included.
          var typed = {}, focused = document.activeElement && document.activeElement.id;
          box.querySelectorAll("input[name=comment]").forEach(function (i) { typed[i.id] = i.value; });
          box.innerHTML = html;
          localTimes(box);
          Object.keys(typed).forEach(function (id) {
            var i = document.getElementById(id);
            if (i) i.value = typed[id];
          });
          var f = focused && document.getElementById(focused);
          if (f && box.contains(f)) f.focus();
        })
        .catch(function () {});
    }
    events.addEventListener("approvals", refresh);
    // A stream the server ended for good (signed out): show it once.
    events.onerror = function () { if (events.readyState === EventSource.CLOSED) refresh(); };
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    live();
  });
})();

// Session replay: a small player for asciicast v2 recordings. It draws the
// text a terminal would show, with cursor moves, line erases and screen
// clears; colours and other attributes are left out.
(function () {
  function Screen(width, height) {
    this.w = width; this.h = height; this.lines = [[]]; this.row = 0; this.col = 0; this.top = 0;
  }
  Screen.prototype.line = function () {
    while (this.lines.length <= this.top + this.row) this.lines.push([]);
    return this.lines[this.top + this.row];
  };
  Screen.prototype.newline = function () {
    this.row += 1;
    if (this.row >= this.h) { this.top += this.row - this.h + 1; this.row = this.h - 1; }
    this.line();
  };
  Screen.prototype.put = function (ch) {
    if (this.col >= this.w) { this.col = 0; this.newline(); }
    var l = this.line();
    while (l.length < this.col) l.push(" ");
    l[this.col] = ch; this.col += 1;
  };
  Screen.prototype.csi = function (params, final) {
    var n = parseInt(params.split(";")[0], 10);
    var l;
    switch (final) {
      case "A": this.row = Math.max(0, this.row - (n || 1)); break;
      case "B": this.row = Math.min(this.h - 1, this.row + (n || 1)); this.line(); break;
      case "C": this.col += (n || 1); break;
      case "D": this.col = Math.max(0, this.col - (n || 1)); break;
      case "G": this.col = Math.max(0, (n || 1) - 1); break;
      case "H": case "f":
        var p = params.split(";");
        this.row = Math.min(this.h - 1, Math.max(0, (parseInt(p[0], 10) || 1) - 1));
        this.col = Math.max(0, (parseInt(p[1], 10) || 1) - 1);
        this.line(); break;
      case "K":
        l = this.line();
        if (!n) l.length = Math.min(l.length, this.col);
        else if (n === 2) l.length = 0;
        break;
      case "J":
        if (n === 2 || n === 3) { this.top = this.lines.length; this.lines.push([]); this.row = 0; this.col = 0; }
        else if (!n) { l = this.line(); l.length = Math.min(l.length, this.col); this.lines.length = this.top + this.row + 1; }
        break;
    }
  };
  Screen.prototype.write = function (s) {
    for (var i = 0; i < s.length; i++) {
      var c = s[i];
      if (c === "\u001b") {
        var next = s[i + 1];
        if (next === "[") {
          var j = i + 2, params = "";
          while (j < s.length && !(s.charCodeAt(j) >= 0x40 && s.charCodeAt(j) <= 0x7e)) { params += s[j]; j++; }
          this.csi(params.replace(/^[?>=]/, ""), s[j]); i = j;
        } else if (next === "]") {
          var k = i + 2;
          while (k < s.length && s[k] !== "\u0007" && !(s[k] === "\u001b" && s[k + 1] === "\\")) k++;
          i = s[k] === "\u001b" ? k + 1 : k;
        } else { i += 1; }
      } else if (c === "\r") { this.col = 0; }
      else if (c === "\n") { this.newline(); }
      else if (c === "\b") { this.col = Math.max(0, this.col - 1); }
      else if (c === "\t") { this.col = Math.min(this.w - 1, (Math.floor(this.col / 8) + 1) * 8); }
      else if (c >= " ") { this.put(c); }
    }
  };
  Screen.prototype.text = function () {
    return this.lines.slice(Math.max(0, this.lines.length - 2000)).map(function (l) { return l.join("").replace(/\s+$/, ""); }).join("\n");
  };

  function player(box) {
    var screen = box.querySelector(".screen"), play = box.querySelector(".play");
    var speed = box.querySelector(".speed"), progress = box.querySelector(".progress");
    fetch(box.getAttribute("data-cast"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var lines = text.split("\n").filter(Boolean);
        var header = JSON.parse(lines.shift());
        var events = lines.map(function (l) { try { return JSON.parse(l); } catch (e) { return null; } })
          .filter(function (e) { return e && (e[1] === "o" || e[1] === "m"); });
        var end = events.length ? events[events.length - 1][0] : 0;
        var timer = null, at = 0, term = null;
        function reset() { term = new Screen(header.width || 80, header.height || 24); at = 0; }
        function step() {
          if (at >= events.length) { play.textContent = "Replay"; timer = null; return; }
          var e = events[at];
          term.write(e[1] === "o" ? e[2] : "\r\n[sluice: " + e[2] + "]\r\n");
          screen.textContent = term.text();
          screen.scrollTop = screen.scrollHeight;
          progress.value = end ? e[0] / end : 1;
          at += 1;
          var wait = at < events.length ? (events[at][0] - e[0]) * 1000 / Number(speed.value) : 0;
          timer = setTimeout(step, Math.min(wait, 2000));
        }
        play.hidden = speed.hidden = progress.hidden = false;
        reset();
        for (var i = 0; i < events.length; i++) term.write(events[i][1] === "o" ? events[i][2] : "");
        screen.textContent = term.text();
        progress.value = 1;
        play.addEventListener("click", function () {
          if (timer) { clearTimeout(timer); timer = null; play.textContent = "Play"; return; }
          if (at === 0 || at >= events.length) { reset(); screen.textContent = ""; }
          play.textContent = "Pause";
          step();
        });
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".player[data-cast]").forEach(player);
  });
})();
