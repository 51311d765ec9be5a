//! Import cycles between the modules of one crate.
//!
//! The graph: one node per module (a file, or an inline `mod` outside
//! tests). An edge `A → B` for each path in `A` (in a `use` or in code) that
//! resolves, through `crate::`, `super::`, `self::`, child module names and
//! `use` bindings, to an item defined in module `B ≠ A`. A `mod b;`
//! declaration is not an edge, and neither is a re-export (`pub use`,
//! `pub(crate) use`): the edge goes to where the item is defined.
//!
//! Parent and child: a module using its descendants is an ordinary edge. A
//! module using an item of one of its *ancestors* counts only when it
//! reaches back up for behaviour: a function or macro, or an associated
//! item of a type (`super::Config::load()`, not an enum variant). Using an
//! ancestor's types, traits, enum variants and constants is not an edge, nor
//! is a glob import from an ancestor (`use super::*`). So `mod.rs` may hold
//! the types its children share, but a child calling back into its parent is
//! a cycle (pass what it needs down instead).
//!
//! Syntax only: method calls on values (`x.settle()`) and paths inside macro
//! invocations are not seen.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::Path,
};

use super::tree::{Crate, ItemKind, PathRef};

/// One edge, with where it comes from.
#[derive(Clone, Debug)]
struct Edge {
    line: usize,
    path: String,
}

/// A cycle found in a crate.
#[derive(Debug)]
pub struct Cycle {
    /// The modules of the cycle in order, with the edge to the next one.
    hops: Vec<(String, String, Edge)>,
    /// Every module of the strongly connected component.
    component: Vec<String>,
}

impl Cycle {
    /// `cycle in CRATE: a -> b -> a` and one line per edge.
    pub fn render(&self, label: &str, root: &Path) -> String {
        let mut names: Vec<&str> = self.hops.iter().map(|(m, _, _)| m.as_str()).collect();
        if let Some((first, _, _)) = self.hops.first() {
            names.push(first);
        }
        let mut out = format!("cycle in {label}: {}", names.join(" -> "));
        if self.component.len() > self.hops.len() {
            out.push_str(&format!(
                "\n  (one component of {} modules: {})",
                self.component.len(),
                self.component.join(", ")
            ));
        }
        for (_, file, edge) in &self.hops {
            out.push_str(&format!(
                "\n  {}:{} {}",
                super::relative(root, Path::new(file)),
                edge.line,
                edge.path
            ));
        }
        out
    }
}

/// Every cycle (one per strongly connected component of more than one module).
pub fn find(krate: &Crate) -> Vec<Cycle> {
    let edges = edges(krate);
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::new(); krate.modules.len()];
    for &(from, to) in edges.keys() {
        adjacency[from].push(to);
    }
    components(&adjacency)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let hops = cycle_in(&c, &adjacency)
                .windows(2)
                .map(|w| {
                    let m = &krate.modules[w[0]];
                    (
                        m.name.clone(),
                        m.file.display().to_string(),
                        edges[&(w[0], w[1])].clone(),
                    )
                })
                .collect();
            Cycle {
                hops,
                component: c.iter().map(|&i| krate.modules[i].name.clone()).collect(),
            }
        })
        .collect()
}

/// The edges of the graph, each with its first occurrence.
fn edges(krate: &Crate) -> BTreeMap<(usize, usize), Edge> {
    let mut edges = BTreeMap::new();
    for (from, module) in krate.modules.iter().enumerate() {
        for r in &module.refs {
            if r.reexport {
                continue;
            }
            let Some(to) = edge_target(krate, from, r) else {
                continue;
            };
            edges.entry((from, to)).or_insert_with(|| Edge {
                line: r.line,
                path: r.segments.join("::"),
            });
        }
    }
    edges
}

/// The module `r` (in module `from`) makes `from` depend on, if any.
fn edge_target(krate: &Crate, from: usize, r: &PathRef) -> Option<usize> {
    let target = resolve(krate, from, &r.segments, 0)?;
    let (to, behaviour) = match target {
        Resolved::Module(m) if r.glob => (m, false),
        Resolved::Module(_) => return None,
        Resolved::Item { module, behaviour } => (module, behaviour),
    };
    if to == from || (is_ancestor(krate, to, from) && !behaviour) {
        return None;
    }
    Some(to)
}

/// What a path names.
enum Resolved {
    /// A module of the crate.
    Module(usize),
    /// An item defined in `module`; `behaviour` if using it runs code there.
    Item { module: usize, behaviour: bool },
}

/// Resolves `segments` as written in module `from`; `None` for anything
/// outside the crate (or not understood).
fn resolve(krate: &Crate, from: usize, segments: &[String], depth: usize) -> Option<Resolved> {
    if depth > 16 {
        return None;
    }
    let first = segments.first()?;
    let modules = &krate.modules;
    let (mut at, mut rest) = match first.as_str() {
        "crate" => (0, &segments[1..]),
        "self" => (from, &segments[1..]),
        "super" => {
            let mut at = from;
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                at = modules[at].parent?;
                rest = &rest[1..];
            }
            (at, rest)
        }
        _ => (from, segments),
    };
    // A bare first segment must be a child module or a binding of `from`.
    let relative = !matches!(first.as_str(), "crate" | "self" | "super");
    while let Some((seg, tail)) = rest.split_first() {
        if let Some(&child) = modules[at].children.get(seg) {
            at = child;
            rest = tail;
            continue;
        }
        if let Some(kind) = modules[at].items.get(seg) {
            if relative && at == from && rest.len() == segments.len() {
                return None; // a local item
            }
            return Some(Resolved::Item {
                module: at,
                behaviour: behaviour(kind, tail.first()),
            });
        }
        let binding = modules[at].bindings.get(seg)?;
        let mut path = binding.path.clone();
        path.extend(tail.iter().cloned());
        return resolve(krate, at, &path, depth + 1);
    }
    Some(Resolved::Module(at))
}

/// Whether using an item of `kind` (followed by segment `next`) runs its code.
fn behaviour(kind: &ItemKind, next: Option<&String>) -> bool {
    match (kind, next) {
        (ItemKind::Fn, _) => true,
        (ItemKind::Enum(variants), Some(n)) => !variants.contains(n),
        (ItemKind::Type, Some(_)) => true,
        _ => false,
    }
}

/// Whether `a` is a strict ancestor of `b`.
fn is_ancestor(krate: &Crate, a: usize, b: usize) -> bool {
    let mut at = krate.modules[b].parent;
    while let Some(p) = at {
        if p == a {
            return true;
        }
        at = krate.modules[p].parent;
    }
    false
}

/// Strongly connected components (Tarjan), each sorted.
fn components(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adjacency: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn connect(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adjacency[v] {
            match s.index[w] {
                None => {
                    connect(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(i) if s.on_stack[w] => s.low[v] = s.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            s.out.push(component);
        }
    }
    let n = adjacency.len();
    let mut s = State {
        adjacency,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            connect(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through the first module of a component, as the list of
/// modules with the first repeated at the end.
fn cycle_in(component: &[usize], adjacency: &[Vec<usize>]) -> Vec<usize> {
    let members: BTreeSet<usize> = component.iter().copied().collect();
    let start = component[0];
    let mut came_from: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &adjacency[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while let Some(&p) = came_from.get(&at) {
                    path.push(p);
                    at = p;
                }
                // path is start, v, …, start reversed.
                path.reverse();
                return path;
            }
            if w != start && !came_from.contains_key(&w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests;
