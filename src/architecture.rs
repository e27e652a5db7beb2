//! The layering of docs/ARCHITECTURE.md, checked on the source: a module imports only from
//! its own layer or the layers below it, no two files import each other (directly or
//! round a cycle; tests excepted), and `unsafe` is allowed only in the FFI modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The library's layers, bottom first.
const LAYERS: &[&str] = &[
    "units",
    "logging",
    "slurm",
    "record",
    "core",
    "gpu",
    "accounting",
    "node",
    "check",
    "plugin",
];

/// The only files that may say `allow(unsafe_code)`: the FFI modules and lib.rs, which
/// declares them.
const UNSAFE_ALLOWED: &[&str] = &[
    "lib.rs",
    "slurm/mod.rs",
    "gpu/mod.rs",
    "gpu/ffi.rs",
    "plugin",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file of the library (`gpu/map/mod.rs` -> `gpu::map`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// Source text without comments and string literals (good enough for paths).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every `crate::a::b...` path in the code, as its segments (lower-case ones only:
/// modules, not items).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut segs = Vec::new();
        let mut tail = rest;
        loop {
            // `crate::a::{b, c::D}`: each of the group's paths.
            if let Some(t) = tail.strip_prefix('{') {
                let group = &t[..t.find('}').unwrap_or(t.len())];
                for g in group.split(',') {
                    let name = g.trim().split("::").next().unwrap_or("").trim();
                    if name.starts_with(|c: char| c.is_ascii_lowercase()) && name != "self" {
                        let mut s = segs.clone();
                        s.push(name.to_string());
                        found.push(s);
                    }
                }
                break;
            }
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let seg = &tail[..end];
            if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
                break;
            }
            segs.push(seg.to_string());
            tail = &tail[end..];
            match tail.strip_prefix("::") {
                Some(t) => tail = t,
                None => break,
            }
        }
        if !segs.is_empty() {
            found.push(segs);
        }
    }
    found
}

struct Tree {
    /// Module path -> its file (relative to src/).
    files: BTreeMap<Vec<String>, PathBuf>,
    /// File -> the files it names by `crate::` paths.
    edges: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
}

fn tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    sources(&src, &mut all);
    let mut files = BTreeMap::new();
    for p in &all {
        let rel = p.strip_prefix(&src).unwrap().to_path_buf();
        // The binary's own files (main.rs and cli/) are above the library.
        if rel.starts_with("cli") || rel == Path::new("main.rs") {
            continue;
        }
        files.insert(module_of(&rel), rel);
    }
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, rel) in files.iter() {
        // Test modules (at a file's end, or files of their own) import what they test.
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = fs::read_to_string(src.join(rel)).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        // `super::` of a file is its parent module (of mod.rs, the folder's parent).
        let parent = &module[..module.len().saturating_sub(1)];
        let sup = if parent.is_empty() {
            "crate::".to_string()
        } else {
            format!("crate::{}::", parent.join("::"))
        };
        let mut code = code_only(text).replace("super::", &sup);
        // A parent naming a child module declared here (`mod gather;` ... `gather::f()`).
        for line in text.lines() {
            let l = line.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            if let Some(child) = l.strip_prefix("mod ").and_then(|c| c.strip_suffix(';')) {
                // (`pub use child::X` re-exports: a facade, not a use.)
                let used = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("pub use "))
                    .any(|l| l.contains(&format!("{child}::")));
                if used {
                    code.push_str(&format!("\ncrate::{}::{child}::x;", module.join("::")));
                }
            }
        }
        let code = code.replace("crate::::", "crate::");
        let set = edges.entry(rel.clone()).or_default();
        for path in crate_paths(&code) {
            // The longest prefix that is a module with its own file.
            let target = (1..=path.len()).rev().find_map(|n| files.get(&path[..n]));
            if let Some(t) = target {
                if t != rel {
                    set.insert(t.clone());
                }
            }
        }
    }
    Tree { files, edges }
}

fn layer(rel: &Path) -> Option<usize> {
    let top = module_of(rel).into_iter().next()?;
    LAYERS.iter().position(|l| *l == top)
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let t = tree();
    assert!(
        t.files.len() > 30,
        "the tree was read: {} files",
        t.files.len()
    );
    let mut wrong = Vec::new();
    for (from, tos) in &t.edges {
        let Some(lf) = layer(from) else { continue };
        for to in tos {
            if let Some(lt) = layer(to) {
                if lt > lf {
                    wrong.push(format!(
                        "{} ({}) imports {} ({})",
                        from.display(),
                        LAYERS[lf],
                        to.display(),
                        LAYERS[lt]
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports from a layer above:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycles_between_files() {
    let t = tree();
    // Tarjan's strongly connected components over the file graph.
    struct Walk<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        cycles: Vec<Vec<&'a PathBuf>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a PathBuf) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on.insert(v);
        let edges = w.edges;
        for u in edges.get(v).into_iter().flatten() {
            if !w.index.contains_key(u) {
                visit(w, u);
                let lu = w.low[u];
                let lv = w.low.get_mut(v).unwrap();
                *lv = (*lv).min(lu);
            } else if w.on.contains(u) {
                let iu = w.index[u];
                let lv = w.low.get_mut(v).unwrap();
                *lv = (*lv).min(iu);
            }
        }
        if w.low[v] == w.index[v] {
            let mut comp = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on.remove(u);
                comp.push(u);
                if u == v {
                    break;
                }
            }
            if comp.len() > 1 {
                w.cycles.push(comp);
            }
        }
    }
    let mut w = Walk {
        edges: &t.edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in t.edges.keys() {
        if !w.index.contains_key(v) {
            visit(&mut w, v);
        }
    }
    let cycles: Vec<String> = w
        .cycles
        .iter()
        .map(|c| {
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn unsafe_code_is_allowed_only_in_the_ffi_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(
        lib.contains("#![deny(unsafe_code)]"),
        "lib.rs denies unsafe code"
    );
    let mut all = Vec::new();
    sources(&src, &mut all);
    let mut wrong = Vec::new();
    for p in all {
        let rel = p.strip_prefix(&src).unwrap();
        let code = code_only(&fs::read_to_string(&p).unwrap());
        let allowed = UNSAFE_ALLOWED.iter().any(|a| rel.starts_with(a));
        if code.contains("unsafe_code") && !allowed && rel != Path::new("architecture.rs") {
            wrong.push(rel.display().to_string());
        }
        // The binary is outside lib.rs's deny: it must have no unsafe at all.
        if (rel.starts_with("cli") || rel == Path::new("main.rs")) && code.contains("unsafe") {
            wrong.push(format!("{} (binary)", rel.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe code allowed outside the FFI modules: {wrong:?}"
    );
}

#[test]
fn paths_are_found_in_use_groups_and_calls() {
    let code = code_only(
        "use crate::a::{b::C, d};\nlet x = crate::e::f(1); // crate::g\nlet s = \"crate::h\";",
    );
    let paths = crate_paths(&code);
    assert!(paths.contains(&vec!["a".into(), "b".into()]));
    assert!(paths.contains(&vec!["a".into(), "d".into()]));
    assert!(paths.contains(&vec!["e".into(), "f".into()]));
    assert!(!paths.iter().any(|p| p[0] == "g" || p[0] == "h"));
}
