//! The floors of `core/src`, checked from the source: every `crate::` path a
//! module names must point to a module on a lower floor (or inside itself), so
//! the modules form no circle and a reader can learn them bottom-up.
//!
//! `cargo test -p sluice --test layers -- --nocapture` prints the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A module may name modules on its own floor or lower ones,
/// and the whole graph must have no circle.
const FLOORS: &[(&str, u8)] = &[
    ("cli", 6),
    ("runtime", 5),
    ("gateway", 4),
    ("admin", 4),
    ("shard", 3),
    ("policy", 2),
    ("identity", 2),
    ("audit", 2),
    ("approvals", 2),
    ("error", 1),
    ("metrics", 1),
    ("net", 1),
    ("notify", 1),
    ("tls", 1),
    ("upstream", 1),
    ("localserver", 1),
    ("log", 0),
];

/// `crate::info!` and friends are `log`'s macros, exported at the crate root.
const LOG_MACROS: &[&str] = &["debug", "info", "warn", "error"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`gateway/http/mod.rs` → `gateway`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Drops `//` comments (doc comments included) so prose naming a path is not an import.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named by a `crate::` path, including the names inside
/// `use crate::{a, b::c}` groups.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        // A log macro is `crate::info!(...)`, or a bare name in a `use` group;
        // a module is followed by `::`.
        let mut add = |item: &str, in_group: bool| {
            let name = ident(item);
            let tail = &item[name.len()..];
            let macro_call = tail.starts_with('!') || (in_group && !tail.starts_with("::"));
            if name.is_empty() {
            } else if LOG_MACROS.contains(&name.as_str()) && macro_call {
                out.insert("log".to_owned());
            } else {
                out.insert(name);
            }
        };
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group (nested groups belong to an item).
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        add(group[start..i].trim(), true);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        add(group[start..i].trim(), true);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            add(after, false);
        }
        rest = after;
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for named in named_modules(&text) {
            if named != module {
                edges.insert(named);
            }
        }
    }
    // Names that are not modules (items, `$crate::` macro helpers) are not edges.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|m| modules.contains(m));
    }
    graph
}

/// A circle of modules, if there is one (depth-first search).
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_form_floors_without_circles() {
    let graph = graph();
    let floor = |m: &str| FLOORS.iter().find(|(n, _)| *n == m).map(|(_, f)| *f);
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        let Some(from) = floor(module) else {
            wrong.push(format!(
                "module `{module}` has no floor: add it to FLOORS in core/tests/layers.rs"
            ));
            continue;
        };
        println!(
            "{from} {module} -> {}",
            Vec::from_iter(edges.iter().cloned()).join(", ")
        );
        for to in edges {
            match floor(to) {
                Some(f) if f <= from => {}
                Some(f) => wrong.push(format!(
                    "`{module}` (floor {from}) names `{to}` (floor {f}): an import must point down"
                )),
                None => {}
            }
        }
    }
    if let Some(c) = circle(&graph) {
        wrong.push(format!("the modules form a circle: {}", c.join(" -> ")));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Paths the checker cannot follow would hide an import: the crate root
/// re-exports nothing, `crate` is never renamed, and no module reaches its
/// parent's siblings through `super::super`.
#[test]
fn no_import_hides_from_the_checker() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = code(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        !lib.contains("pub use"),
        "lib.rs must not re-export (it hides edges)"
    );
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        assert!(!text.contains("crate as "), "{shown}: `crate` renamed");
        assert!(
            !text.contains("super::super"),
            "{shown}: name the module with crate:: instead of super::super"
        );
    }
}

#[test]
fn the_checker_finds_circles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(circle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        circle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    let names =
        named_modules("use crate::{audit::Rec, info};\nlet x = crate::shard::Shard::new();");
    assert_eq!(
        names,
        BTreeSet::from(["audit".into(), "log".into(), "shard".into()])
    );
    assert!(named_modules(&code("// see crate::runtime")).is_empty());
}

/// What a record holds is decided in one place, `audit/event.rs` (with the
/// writer's own checkpoint and recovery records, and the record builder):
/// a driver that builds a record by hand is how field names drift apart.
#[test]
fn records_are_built_only_by_the_audit_vocabulary() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let allowed =
        ["event.rs", "record.rs", "chain.rs", "writer.rs"].map(|f| src.join("audit").join(f));
    let mut found = Vec::new();
    for file in &files {
        if allowed.contains(file) {
            continue;
        }
        let text = code(&std::fs::read_to_string(file).unwrap());
        if text.contains("Rec::begin") {
            found.push(file.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    assert!(
        found.is_empty(),
        "records built outside audit/event.rs: {found:?}"
    );
    // The check sees a hand-built record where one is.
    assert!(code("let r = Rec::begin(out, \"command\", 0);").contains("Rec::begin"));
}
