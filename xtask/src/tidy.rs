//! Repository hygiene checks, run by `cargo test --workspace`.
//!
//! The rules: `unsafe` appears only in `sys` modules and every unsafe block or impl has a
//! `// SAFETY:` comment right above it; each `sys` module opens with a `//! # Safety` contract;
//! crate roots deny `unsafe_code` and only `mod sys` may allow it; no `dbg!`, `#[ignore]` or
//! `#[should_panic]`; every workspace member inherits the workspace lints.
//!
//! The checks read Rust sources through [`strip`], which blanks out comments and literals, so
//! that prose and strings (including the patterns in this file) never count as code.

use std::fs;
use std::path::{Path, PathBuf};

use crate::ci::workspace_root;

/// Replaces the contents of comments, string literals and char literals with spaces, keeping
/// every newline, so that line numbers in the result match the source.
fn strip(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && !ident_before(&chars, i) {
            // A raw string r"…" or r#"…"#: count the hashes, then find the matching close.
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.push('r');
            for _ in 0..=hashes {
                out.push(' ');
            }
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' {
                    out.push(' ');
                    if let Some(&e) = chars.get(i + 1) {
                        out.push(blank(e));
                    }
                    i += 2;
                } else if chars[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): only the former has a
            // closing quote right after one character or after an escape.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                    j += 1;
                }
                for _ in i..=j.min(chars.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the character before `i` continues an identifier (so `r` is not a raw-string prefix
/// but the end of a name such as `for`).
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Byte offsets of the keyword `word` in `code` (whole words only).
fn find_word(code: &str, word: &str) -> Vec<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word)
        .filter(|&(at, _)| {
            let before = code[..at].chars().next_back();
            let after = code[at + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
        .map(|(at, _)| at)
        .collect()
}

/// 1-based line number of byte offset `at`.
fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

/// Lines (1-based) of `unsafe` blocks and impls in `src` that lack a `// SAFETY:` comment in
/// the comment lines directly above.
fn undocumented_unsafe(src: &str) -> Vec<usize> {
    let code = strip(src);
    let lines: Vec<&str> = src.lines().collect();
    let mut missing = Vec::new();
    for at in find_word(&code, "unsafe") {
        let rest = code[at + "unsafe".len()..].trim_start();
        if !(rest.starts_with('{') || rest.starts_with("impl")) {
            continue;
        }
        let line = line_of(&code, at);
        let documented = lines[..line - 1]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with("//"))
            .any(|l| l.contains("SAFETY:"));
        if !documented {
            missing.push(line);
        }
    }
    missing
}

/// Whether `path` lies in a `sys` module: a `sys.rs` file or anything under a `sys/` folder.
fn is_sys(path: &Path) -> bool {
    path.file_name().is_some_and(|f| f == "sys.rs")
        || path.components().any(|c| c.as_os_str() == "sys")
}

/// Every `.rs` file of the workspace, skipping build output and hidden folders.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace_root(), &mut out);
    out.sort();
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Member directories listed in the root manifest's `members = [...]`.
fn members() -> Vec<String> {
    let manifest = read(&workspace_root().join("Cargo.toml"));
    let start = manifest
        .find("members = [")
        .expect("root Cargo.toml has a members list");
    let list = &manifest[start..];
    let list = &list[..list.find(']').expect("members list is closed")];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Whether a manifest has a `[lints]` table with `workspace = true`.
fn inherits_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n  {}", found.join("\n  "));
}

#[test]
fn unsafe_only_in_sys_modules() {
    let mut found = Vec::new();
    for path in rust_files().into_iter().filter(|p| !is_sys(p)) {
        let code = strip(&read(&path));
        for at in find_word(&code, "unsafe") {
            found.push(format!("{}:{}", rel(&path), line_of(&code, at)));
        }
    }
    assert_none(
        "`unsafe` outside a sys module (move it behind a safe wrapper in sys)",
        found,
    );
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut found = Vec::new();
    for path in rust_files() {
        for line in undocumented_unsafe(&read(&path)) {
            found.push(format!("{}:{line}", rel(&path)));
        }
    }
    assert_none(
        "unsafe block or impl without a `// SAFETY:` comment above it",
        found,
    );
}

#[test]
fn sys_modules_open_with_a_safety_contract() {
    let mut found = Vec::new();
    for path in rust_files().into_iter().filter(|p| is_sys(p)) {
        let src = read(&path);
        let header: Vec<&str> = src
            .lines()
            .take_while(|l| l.trim_start().starts_with("//!"))
            .collect();
        if !header.iter().any(|l| l.contains("# Safety")) {
            found.push(rel(&path));
        }
    }
    assert_none(
        "sys module without a `//! # Safety` section in its opening docs",
        found,
    );
}

#[test]
fn crate_roots_deny_unsafe_code_and_only_sys_allows_it() {
    let mut found = Vec::new();
    for member in members() {
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = workspace_root().join(&member).join(root);
            if path.exists() && !strip(&read(&path)).contains("#![deny(unsafe_code)]") {
                found.push(format!("{}: missing #![deny(unsafe_code)]", rel(&path)));
            }
        }
    }
    for path in rust_files() {
        let code = strip(&read(&path));
        let lines: Vec<&str> = code.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if !line.contains("allow(unsafe_code") {
                continue;
            }
            let item = lines[n + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("#["));
            if !item.is_some_and(|l| l.contains("mod sys")) {
                found.push(format!(
                    "{}:{}: allow(unsafe_code) not on `mod sys`",
                    rel(&path),
                    n + 1
                ));
            }
        }
    }
    assert_none("unsafe_code lint settings", found);
}

#[test]
fn no_debugging_or_disabled_tests() {
    let banned = [
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
        concat!("#[", "should_panic"),
    ];
    let mut found = Vec::new();
    for path in rust_files() {
        let code = strip(&read(&path));
        for pattern in banned {
            for (at, _) in code.match_indices(pattern) {
                found.push(format!("{}:{}: {pattern}", rel(&path), line_of(&code, at)));
            }
        }
    }
    assert_none(
        "banned in committed code (assert on the Err variant instead)",
        found,
    );
}

#[test]
fn every_member_inherits_workspace_lints() {
    let members = members();
    assert!(
        members.len() >= 7,
        "the workspace lists its members: {members:?}"
    );
    let mut found = Vec::new();
    for member in members {
        let manifest = read(&workspace_root().join(&member).join("Cargo.toml"));
        if !inherits_lints(&manifest) {
            found.push(format!("{member}/Cargo.toml"));
        }
    }
    assert_none("member without `[lints] workspace = true`", found);
}

#[test]
fn strip_blanks_comments_and_literals_but_keeps_lines() {
    let src = "let a = \"unsafe {\"; // unsafe\n/* unsafe /* nested */ x */ let b = 'u';\nlet c = r#\"dbg!(\"#; fn f<'a>(x: &'a str) {}\n";
    let code = strip(src);
    assert_eq!(code.lines().count(), src.lines().count());
    assert!(find_word(&code, "unsafe").is_empty(), "{code}");
    assert!(!code.contains("dbg"), "{code}");
    assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
    assert!(code.contains("let b ="), "{code}");
}

#[test]
fn unsafe_block_without_safety_comment_is_found() {
    let src = "fn f() {\n    // SAFETY: fine.\n    unsafe { g() };\n    // just a note\n    unsafe { g() };\n}\n// SAFETY: Send is fine.\nunsafe impl Send for X {}\nunsafe impl Sync for X {}\nunsafe fn h() {}\n";
    assert_eq!(undocumented_unsafe(src), vec![5, 9]);
}

#[test]
fn words_and_lint_tables_are_recognised() {
    assert_eq!(find_word("unsafe_code unsafe {", "unsafe"), vec![12]);
    assert!(inherits_lints(
        "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
    ));
    assert!(!inherits_lints(
        "[package]\nworkspace = true\n[lints.rust]\nx = 1\n"
    ));
    assert!(is_sys(Path::new("a/src/sys/shm.rs")) && is_sys(Path::new("a/src/sys.rs")));
    assert!(!is_sys(Path::new("a/src/system.rs")));
}
