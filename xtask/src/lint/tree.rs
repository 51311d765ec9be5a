//! A crate's module tree, read from its root file through `mod` declarations,
//! with what the lint needs of each module: the items it defines, its `use`
//! bindings, the paths it refers to, and its functions' lengths.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use syn::visit::{self, Visit};

/// What a name defined in a module is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// A function or a macro: behaviour.
    Fn,
    /// A struct, union, trait or type alias.
    Type,
    /// An enum, with its variant names.
    Enum(Vec<String>),
    /// A const or a static.
    Value,
}

/// A `use` binding of a module: `name` stands for `path`.
#[derive(Clone, Debug)]
pub struct Binding {
    /// The path, as written (relative to the module).
    pub path: Vec<String>,
}

/// A path in a module's code or `use` declarations that may name another
/// module of the crate.
#[derive(Clone, Debug)]
pub struct PathRef {
    /// The segments, as written.
    pub segments: Vec<String>,
    /// Line in the module's file.
    pub line: usize,
    /// Part of a `pub use` (a re-export, not a dependency).
    pub reexport: bool,
    /// A glob import (`use a::*`).
    pub glob: bool,
}

/// One module.
#[derive(Debug)]
pub struct Module {
    /// `crate::a::b`.
    pub name: String,
    /// The file holding it.
    pub file: PathBuf,
    /// The parent module, `None` for the crate root.
    pub parent: Option<usize>,
    /// Child modules by name.
    pub children: BTreeMap<String, usize>,
    /// Items defined here by name.
    pub items: BTreeMap<String, ItemKind>,
    /// `use` bindings at module level by name.
    pub bindings: BTreeMap<String, Binding>,
    /// Paths referred to.
    pub refs: Vec<PathRef>,
}

/// A function and its length.
#[derive(Clone, Debug)]
pub struct FnLength {
    /// The file.
    pub file: PathBuf,
    /// Line of `fn`.
    pub line: usize,
    /// The function's name.
    pub name: String,
    /// Lines from `fn` to the closing brace.
    pub lines: usize,
}

/// A crate's modules; index 0 is the root.
#[derive(Debug)]
pub struct Crate {
    /// The modules.
    pub modules: Vec<Module>,
    /// Every non-test function, outside generated and test files.
    fns: Vec<FnLength>,
}

impl Crate {
    /// Reads the crate rooted at `root_file`.
    pub fn load(root_file: &Path) -> anyhow::Result<Crate> {
        let mut krate = Crate {
            modules: Vec::new(),
            fns: Vec::new(),
        };
        let dir = root_file.parent().unwrap_or(Path::new(".")).to_path_buf();
        krate.load_file(root_file, "crate".to_owned(), None, &dir)?;
        Ok(krate)
    }

    /// Functions longer than `max` lines.
    pub fn long_fns(&self, max: usize) -> impl Iterator<Item = &FnLength> {
        self.fns.iter().filter(move |f| f.lines > max)
    }

    /// Adds the module in `file`; `dir` is where its child module files are.
    fn load_file(
        &mut self,
        file: &Path,
        name: String,
        parent: Option<usize>,
        dir: &Path,
    ) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("{}", file.display()))?;
        let generated = text
            .lines()
            .next()
            .is_some_and(|l| l.contains("@generated"));
        let file_name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let test_file = matches!(file_name, "tests.rs" | "proptests.rs");
        let index = self.add_module(name, file, parent);
        let ctx = FileCtx {
            file: file.to_path_buf(),
            count_fns: !generated && !test_file,
        };
        self.load_items(&ast.items, index, dir, &ctx)?;
        Ok(index)
    }

    fn add_module(&mut self, name: String, file: &Path, parent: Option<usize>) -> usize {
        let index = self.modules.len();
        self.modules.push(Module {
            name,
            file: file.to_path_buf(),
            parent,
            children: BTreeMap::new(),
            items: BTreeMap::new(),
            bindings: BTreeMap::new(),
            refs: Vec::new(),
        });
        index
    }

    /// Adds the items of module `index` (whose child files are in `dir`).
    fn load_items(
        &mut self,
        items: &[syn::Item],
        index: usize,
        dir: &Path,
        ctx: &FileCtx,
    ) -> anyhow::Result<()> {
        for item in items {
            if is_test(item_attrs(item)) {
                continue;
            }
            match item {
                syn::Item::Mod(m) => self.load_mod(m, index, dir, ctx)?,
                syn::Item::Use(u) => {
                    let public = !matches!(u.vis, syn::Visibility::Inherited);
                    let mut flat = Vec::new();
                    flatten_use(&u.tree, &mut Vec::new(), &mut flat);
                    for (segments, binding, line) in flat {
                        let module = &mut self.modules[index];
                        if let Some(name) = &binding {
                            module.bindings.insert(
                                name.clone(),
                                Binding {
                                    path: segments.clone(),
                                },
                            );
                        }
                        module.refs.push(PathRef {
                            glob: binding.is_none(),
                            segments,
                            line,
                            reexport: public,
                        });
                    }
                }
                other => {
                    if let Some((name, kind)) = item_name(other) {
                        self.modules[index].items.insert(name, kind);
                    }
                    let mut v = CodeVisitor {
                        refs: Vec::new(),
                        fns: Vec::new(),
                        ctx,
                    };
                    v.visit_item(other);
                    self.modules[index].refs.extend(v.refs);
                    self.fns.extend(v.fns);
                }
            }
        }
        Ok(())
    }

    /// Adds a child module, inline or in its own file.
    fn load_mod(
        &mut self,
        m: &syn::ItemMod,
        parent: usize,
        dir: &Path,
        ctx: &FileCtx,
    ) -> anyhow::Result<()> {
        let name = m.ident.to_string();
        let full = format!("{}::{name}", self.modules[parent].name);
        let child = if let Some((_, items)) = &m.content {
            let index = self.add_module(full, &ctx.file, Some(parent));
            self.load_items(items, index, &dir.join(&name), ctx)?;
            index
        } else {
            let file = match path_attr(&m.attrs) {
                Some(p) => ctx.file.parent().unwrap_or(dir).join(p),
                None => {
                    let flat = dir.join(format!("{name}.rs"));
                    if flat.exists() {
                        flat
                    } else {
                        dir.join(&name).join("mod.rs")
                    }
                }
            };
            let child_dir = match file.file_name().and_then(|n| n.to_str()) {
                Some("mod.rs") => file.parent().unwrap_or(dir).to_path_buf(),
                _ => file.with_extension(""),
            };
            self.load_file(&file, full, Some(parent), &child_dir)?
        };
        self.modules[parent].children.insert(name, child);
        Ok(())
    }
}

/// What a visitor of one file needs to know about it.
struct FileCtx {
    file: PathBuf,
    /// False for generated and test files.
    count_fns: bool,
}

/// Collects the paths and function lengths of one item, skipping test code.
struct CodeVisitor<'a> {
    refs: Vec<PathRef>,
    fns: Vec<FnLength>,
    ctx: &'a FileCtx,
}

impl CodeVisitor<'_> {
    fn record_fn(&mut self, attrs: &[syn::Attribute], sig: &syn::Signature, block: &syn::Block) {
        if !self.ctx.count_fns || attrs.iter().any(is_test_attr) {
            return;
        }
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        self.fns.push(FnLength {
            file: self.ctx.file.clone(),
            line: start,
            name: sig.ident.to_string(),
            lines: end + 1 - start,
        });
    }
}

impl<'ast> Visit<'ast> for CodeVisitor<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test(&f.attrs) || f.attrs.iter().any(is_test_attr) {
            return;
        }
        self.record_fn(&f.attrs, &f.sig, &f.block);
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        self.record_fn(&f.attrs, &f.sig, &f.block);
        visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        if let Some(block) = &f.default {
            self.record_fn(&f.attrs, &f.sig, block);
        }
        visit::visit_trait_item_fn(self, f);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_test(&i.attrs) {
            visit::visit_item_impl(self, i);
        }
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Modules are walked by the tree; one inside a function body is not.
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut flat = Vec::new();
        flatten_use(&u.tree, &mut Vec::new(), &mut flat);
        for (segments, binding, line) in flat {
            self.refs.push(PathRef {
                glob: binding.is_none(),
                segments,
                line,
                reexport: false,
            });
        }
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() && p.segments.len() > 1 {
            self.refs.push(PathRef {
                segments: p.segments.iter().map(|s| s.ident.to_string()).collect(),
                line: p.segments[0].ident.span().start().line,
                reexport: false,
                glob: false,
            });
        }
        visit::visit_path(self, p);
    }
}

/// Flattens a use tree into `(path, bound name or None for a glob, line)`.
fn flatten_use(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let line = n.ident.span().start().line;
            if n.ident == "self" {
                let name = prefix.last().cloned();
                out.push((prefix.clone(), name, line));
            } else {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                out.push((path, Some(n.ident.to_string()), line));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((
                path,
                Some(r.rename.to_string()),
                r.ident.span().start().line,
            ));
        }
        syn::UseTree::Glob(g) => {
            out.push((prefix.clone(), None, g.star_token.spans[0].start().line))
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, out);
            }
        }
    }
}

/// The name and kind an item defines.
fn item_name(item: &syn::Item) -> Option<(String, ItemKind)> {
    Some(match item {
        syn::Item::Fn(f) => (f.sig.ident.to_string(), ItemKind::Fn),
        syn::Item::Macro(m) => (m.ident.as_ref()?.to_string(), ItemKind::Fn),
        syn::Item::Struct(s) => (s.ident.to_string(), ItemKind::Type),
        syn::Item::Union(u) => (u.ident.to_string(), ItemKind::Type),
        syn::Item::Trait(t) => (t.ident.to_string(), ItemKind::Type),
        syn::Item::Type(t) => (t.ident.to_string(), ItemKind::Type),
        syn::Item::Enum(e) => (
            e.ident.to_string(),
            ItemKind::Enum(e.variants.iter().map(|v| v.ident.to_string()).collect()),
        ),
        syn::Item::Const(c) => (c.ident.to_string(), ItemKind::Value),
        syn::Item::Static(s) => (s.ident.to_string(), ItemKind::Value),
        _ => return None,
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// `#[cfg(test)]` (also `all(test, …)`), not `cfg(not(test))`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let syn::Meta::List(list) = &a.meta else {
            return false;
        };
        if !list.path.is_ident("cfg") {
            return false;
        }
        let tokens: String = list
            .tokens
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        tokens == "test" || tokens.starts_with("all(test,")
    })
}

/// `#[test]`, `#[tokio::test]`, `#[proptest]`-style test functions.
fn is_test_attr(a: &syn::Attribute) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == "test")
}

/// The value of `#[path = "…"]`.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}
