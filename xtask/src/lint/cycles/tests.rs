use std::path::Path;

use super::*;

/// Writes `files` (path, text) under a temporary directory and loads the
/// crate rooted at `lib.rs`.
fn krate(files: &[(&str, &str)]) -> (tempfile::TempDir, Crate) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let krate = Crate::load(&dir.path().join("lib.rs")).unwrap();
    (dir, krate)
}

fn cycle_names(krate: &Crate) -> Vec<Vec<String>> {
    find(krate)
        .into_iter()
        .map(|c| c.hops.into_iter().map(|(m, _, _)| m).collect())
        .collect()
}

#[test]
fn siblings_using_each_other_are_a_cycle() {
    let (dir, k) = krate(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        (
            "a.rs",
            "use crate::b::B;\npub struct A(B);\npub fn helper() {}\n",
        ),
        (
            "b.rs",
            "pub struct B;\npub fn f() { super::a::helper(); }\n",
        ),
        ("c.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(cycle_names(&k), [["crate::a", "crate::b"]]);
    let text = find(&k)[0].render("demo (lib)", dir.path());
    assert!(
        text.starts_with("cycle in demo (lib): crate::a -> crate::b -> crate::a"),
        "{text}"
    );
    assert!(text.contains("a.rs:1 crate::b::B"), "{text}");
    assert!(text.contains("b.rs:2 super::a::helper"), "{text}");
}

#[test]
fn a_child_may_use_its_parents_types_but_not_call_it() {
    let types_only = [
        ("lib.rs", "mod p;\n"),
        (
            "p/mod.rs",
            "mod c;\npub use c::make;\npub struct T;\npub enum E { X }\npub fn run() { c::make(); }\n",
        ),
        (
            "p/c.rs",
            "use super::{E, T};\npub fn make() -> T { let _ = E::X; T }\n",
        ),
    ];
    let (_dir, k) = krate(&types_only);
    assert!(cycle_names(&k).is_empty(), "{:?}", cycle_names(&k));

    let calls_up = [
        ("lib.rs", "mod p;\n"),
        (
            "p/mod.rs",
            "mod c;\npub fn helper() {}\npub fn run() { c::make(); }\n",
        ),
        ("p/c.rs", "pub fn make() { super::helper(); }\n"),
    ];
    let (_dir, k) = krate(&calls_up);
    assert_eq!(cycle_names(&k), [["crate::p", "crate::p::c"]]);

    // An associated function of a parent's type is behaviour too.
    let assoc = [
        ("lib.rs", "mod p;\n"),
        (
            "p/mod.rs",
            "mod c;\npub struct T;\nimpl T { pub fn new() -> T { c::make() } }\n",
        ),
        (
            "p/c.rs",
            "use super::T;\npub fn make() -> T { T }\npub fn other() -> T { T::new() }\n",
        ),
    ];
    let (_dir, k) = krate(&assoc);
    assert_eq!(cycle_names(&k), [["crate::p", "crate::p::c"]]);
}

#[test]
fn reexports_and_bindings_are_followed_to_the_definition() {
    // `b` uses `crate::X`, which lib.rs re-exports from `a`; `a` uses `b`.
    let (_dir, k) = krate(&[
        ("lib.rs", "mod a;\nmod b;\npub use a::X;\n"),
        ("a.rs", "pub struct X;\npub fn f() { crate::b::g(); }\n"),
        ("b.rs", "use crate::X;\npub fn g() -> Option<X> { None }\n"),
    ]);
    assert_eq!(cycle_names(&k), [["crate::a", "crate::b"]]);

    // Through a module binding: `use crate::a; a::f()`.
    let (_dir, k) = krate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "pub fn f() {}\npub fn h() { crate::b::g(); }\n"),
        ("b.rs", "use crate::a;\npub fn g() { a::f(); }\n"),
    ]);
    assert_eq!(cycle_names(&k), [["crate::a", "crate::b"]]);
}

#[test]
fn test_code_is_not_part_of_the_graph() {
    let (_dir, k) = krate(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "pub fn f() { crate::b::g(); }\n"),
        (
            "b.rs",
            "pub fn g() {}\n#[cfg(test)]\nmod tests { fn t() { crate::a::f(); } }\n",
        ),
    ]);
    assert!(cycle_names(&k).is_empty());
}

#[test]
fn long_functions_outside_tests_and_generated_files() {
    let body = "    let _ = 1;\n".repeat(5);
    let long = format!("pub fn long() {{\n{body}}}\n");
    let lib = format!(
        "mod out;\nmod tests;\n{long}pub fn short() {{}}\n#[cfg(test)]\nmod t {{\n{long}}}\n\
         impl S {{\n    #[test]\n    fn in_test() {{\n{body}    }}\n    fn method() {{\n{body}    }}\n}}\npub struct S;\n"
    );
    let generated = format!("// @generated\n{long}");
    let (_dir, k) = krate(&[
        ("lib.rs", &lib),
        ("out.rs", &generated),
        ("tests.rs", &long),
    ]);
    let found: Vec<(usize, &str, usize)> = k
        .long_fns(4)
        .map(|f| (f.line, f.name.as_str(), f.lines))
        .collect();
    assert_eq!(found, [(3, "long", 7), (30, "method", 7)]);
    assert!(Path::new(&k.long_fns(4).next().unwrap().file).ends_with("lib.rs"));
}
