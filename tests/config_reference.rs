//! `docs/CONFIG.md`, the config reference, is generated from the config
//! structs themselves: every `Deserialize` struct reachable from
//! `telemine::config::Config` (in `src/config.rs` and the connectors
//! crate), its keys, their types, their defaults (from `#[serde(default =
//! "…")]` functions) and their doc comments. This test regenerates it and
//! fails when the committed file differs, so the reference cannot fall
//! behind the code:
//!
//! ```text
//! UPDATE_CONFIG_REFERENCE=1 cargo test --test config_reference
//! ```
//!
//! writes the new file (as rust-analyzer's source-generation tests do).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use quote::ToTokens;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files holding the config structs, relative to the repository.
const SOURCES: &[&str] = &[
    "src/config.rs",
    "crates/alerting/src/config.rs",
    "crates/connectors/src/kafka/mod.rs",
    "crates/codec/src/schema.rs",
    "crates/codec/src/decode/mod.rs",
    "crates/codec/src/decode/limits.rs",
    "crates/detector/src/lib.rs",
    "crates/runtime/src/settings.rs",
    "crates/detector/src/score.rs",
    "crates/detector/src/features.rs",
];

/// How a few types read in TOML.
fn toml_type(rust: &str) -> Option<&'static str> {
    Some(match rust {
        "String" | "PathBuf" | "Secret" => "string",
        "bool" => "boolean",
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "integer",
        "f32" | "f64" => "float",
        "Duration" => "duration (\"500ms\", \"30s\", \"5m\", \"1h\")",
        "ColumnSpec" => "string (\"name type\")",
        "ByteSize" => "size (\"16KiB\", \"1MiB\", or bytes)",
        _ => return None,
    })
}

/// Everything the generator knows of the sources.
#[derive(Default)]
struct Items {
    structs: BTreeMap<String, syn::ItemStruct>,
    enums: BTreeMap<String, syn::ItemEnum>,
    functions: BTreeMap<String, syn::ItemFn>,
    consts: BTreeMap<String, String>,
}

impl Items {
    fn read() -> Items {
        let mut items = Items::default();
        for file in SOURCES {
            let path = repo().join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            for item in parsed.items {
                match item {
                    syn::Item::Struct(s) if derives_deserialize(&s.attrs) => {
                        items.structs.insert(s.ident.to_string(), s);
                    }
                    syn::Item::Enum(e) if derives_deserialize(&e.attrs) => {
                        items.enums.insert(e.ident.to_string(), e);
                    }
                    syn::Item::Fn(f) if f.sig.ident.to_string().starts_with("default_") => {
                        items.functions.insert(f.sig.ident.to_string(), f);
                    }
                    syn::Item::Const(c) => {
                        items.consts.insert(
                            c.ident.to_string(),
                            tidy(&c.expr.to_token_stream().to_string()),
                        );
                    }
                    _ => {}
                }
            }
        }
        items
    }
}

fn derives_deserialize(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive") && a.to_token_stream().to_string().contains("Deserialize")
    })
}

/// The `///` lines of `attrs`, joined into paragraphs.
fn docs(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if let syn::Meta::NameValue(nv) = &a.meta
            && nv.path.is_ident("doc")
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_string());
        }
    }
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            out.push_str("<br>");
        } else {
            if !out.is_empty() && !out.ends_with("<br>") {
                out.push(' ');
            }
            out.push_str(&line);
        }
    }
    out.replace('|', "\\|")
}

/// The `serde(...)` settings of `attrs` as (name, value) pairs.
fn serde(attrs: &[syn::Attribute]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = a.parse_nested_meta(|m| {
            let name = m.path.to_token_stream().to_string();
            let value = match m.value() {
                Ok(v) => Some(v.parse::<syn::LitStr>()?.value()),
                Err(_) => None,
            };
            out.push((name, value));
            Ok(())
        });
    }
    out
}

/// The type in words and, when it is a struct of its own, its name and
/// whether it is a list of them (`[[table]]`).
struct Shape {
    words: String,
    table: Option<(String, bool)>,
    optional: bool,
    /// What `#[serde(default)]` gives (the type's `Default`).
    zero: String,
}

impl Shape {
    fn plain(words: impl Into<String>, zero: impl Into<String>) -> Shape {
        Shape {
            words: words.into(),
            table: None,
            optional: false,
            zero: zero.into(),
        }
    }
}

fn shape(ty: &syn::Type, items: &Items) -> Shape {
    let syn::Type::Path(p) = ty else {
        return Shape::plain(ty.to_token_stream().to_string(), "—");
    };
    let Some(last) = p.path.segments.last() else {
        return Shape::plain("", "—");
    };
    let name = last.ident.to_string();
    let inner = |i: usize| match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => a.args.iter().nth(i).and_then(|g| match g {
            syn::GenericArgument::Type(t) => Some(shape(t, items)),
            _ => None,
        }),
        _ => None,
    };
    match name.as_str() {
        "Spanned" | "Box" => inner(0).unwrap_or_else(|| Shape::plain(name, "—")),
        "Option" => {
            let mut s = inner(0).unwrap_or_else(|| Shape::plain(name, "—"));
            s.optional = true;
            s
        }
        "Vec" | "BTreeSet" | "HashSet" => {
            let s = inner(0).unwrap_or_else(|| Shape::plain("", ""));
            match s.table {
                Some((t, _)) => Shape {
                    words: format!("array of tables `[[…]]` ({t})"),
                    table: Some((t, true)),
                    optional: false,
                    zero: "none".into(),
                },
                None => Shape::plain(format!("array of {}", s.words), "`[]`"),
            }
        }
        "BTreeMap" | "HashMap" => {
            let v = inner(1).map_or_else(String::new, |s| s.words);
            Shape::plain(format!("table of {v}"), "`{}`")
        }
        _ => {
            if let Some(st) = items.structs.get(&name) {
                // A transparent struct reads as its one field.
                let transparent = serde(&st.attrs).iter().any(|(k, _)| k == "transparent");
                if transparent && let Some(f) = st.fields.iter().next() {
                    return shape(&f.ty, items);
                }
                Shape {
                    words: format!("table ({name})"),
                    table: Some((name, false)),
                    optional: false,
                    zero: "its keys' defaults".into(),
                }
            } else if let Some(e) = items.enums.get(&name) {
                let zero = e
                    .variants
                    .iter()
                    .zip(variants(e))
                    .find(|(v, _)| v.attrs.iter().any(|a| a.path().is_ident("default")))
                    .map_or_else(|| "—".to_string(), |(_, w)| w);
                Shape::plain(format!("one of {}", variants(e).join(", ")), zero)
            } else {
                let zero = match name.as_str() {
                    "bool" => "`false`",
                    "String" | "PathBuf" => "`\"\"`",
                    "Duration" => "`\"0s\"`",
                    "ByteSize" => "`0`",
                    "f32" | "f64" => "`0.0`",
                    n if toml_type(n) == Some("integer") => "`0`",
                    _ => "—",
                };
                Shape::plain(toml_type(&name).map_or(name, str::to_string), zero)
            }
        }
    }
}

/// An enum's variants as written in TOML (`rename_all` applied).
fn variants(e: &syn::ItemEnum) -> Vec<String> {
    let rule = serde(&e.attrs)
        .into_iter()
        .find(|(k, _)| k == "rename_all")
        .and_then(|(_, v)| v);
    e.variants
        .iter()
        .map(|v| {
            let name = v.ident.to_string();
            let renamed = serde(&v.attrs)
                .into_iter()
                .find(|(k, _)| k == "rename")
                .and_then(|(_, v)| v);
            let written = renamed.unwrap_or_else(|| match rule.as_deref() {
                Some("lowercase") => name.to_lowercase(),
                Some("snake_case") => snake(&name),
                _ => name,
            });
            format!("`\"{written}\"`")
        })
        .collect()
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// A Rust expression's tokens written as a person would.
fn tidy(tokens: &str) -> String {
    tokens
        .replace(" . ", ".")
        .replace(" (", "(")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" ,", ",")
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" !", "!")
}

/// `n` bytes as the config writes sizes.
fn size(n: u64) -> String {
    if n > 0 && n.is_multiple_of(1024 * 1024) {
        format!("`\"{}MiB\"`", n / (1024 * 1024))
    } else if n > 0 && n.is_multiple_of(1024) {
        format!("`\"{}KiB\"`", n / 1024)
    } else {
        format!("`{n}`")
    }
}

/// The value of a constant expression of integers, `*` and casts.
fn integer(expr: &str, items: &Items) -> Option<u64> {
    let expr = expr.trim();
    if let Some((a, b)) = expr.split_once(" * ") {
        return Some(integer(a, items)? * integer(b, items)?);
    }
    let expr = expr
        .trim_end_matches(" as u64")
        .trim_end_matches(" as usize");
    let name = expr.rsplit("::").next().unwrap_or(expr);
    if let Some(value) = items.consts.get(name) {
        return integer(value, items);
    }
    expr.replace('_', "")
        .trim_end_matches("usize")
        .trim_end_matches("u64")
        .parse()
        .ok()
}

/// What a `default = "f"` function returns, when its body is one simple
/// expression; where to look otherwise.
fn default_of(f: &str, items: &Items) -> String {
    let Some(item) = items.functions.get(f) else {
        return format!("`{f}()`");
    };
    let mut body = match item.block.stmts.as_slice() {
        [syn::Stmt::Expr(e, None)] => tidy(&e.to_token_stream().to_string()),
        _ => return format!("see `{f}()` in the source"),
    };
    // A constant of ours stands for its value (a list of them, collected,
    // for the list).
    let head = body.split_once(".iter()").map_or(body.as_str(), |(h, _)| h);
    let name = head.rsplit("::").next().unwrap_or(head).to_string();
    if let Some(value) = items.consts.get(&name) {
        body = value.clone();
    }
    for (prefix, unit) in [
        ("Duration::from_secs(", "s"),
        ("Duration::from_millis(", "ms"),
    ] {
        if let Some(n) = body
            .rsplit_once(prefix)
            .and_then(|(_, r)| r.strip_suffix(')'))
            && let Some(n) = integer(n, items)
        {
            let written = match unit {
                "s" if n >= 3600 && n.is_multiple_of(3600) => format!("{}h", n / 3600),
                "s" if n >= 60 && n.is_multiple_of(60) => format!("{}m", n / 60),
                _ => format!("{n}{unit}"),
            };
            return format!("`\"{written}\"`");
        }
    }
    for (prefix, scale) in [
        ("ByteSize::b(", 1),
        ("ByteSize::kib(", 1024),
        ("ByteSize::mib(", 1024 * 1024),
    ] {
        if let Some(n) = body
            .rsplit_once(prefix)
            .and_then(|(_, r)| r.strip_suffix(')'))
            && let Some(n) = integer(n, items)
        {
            return size(n * scale);
        }
    }
    if let Some(n) = integer(&body, items) {
        return format!("`{n}`");
    }
    // A string made in place (`Spanned::new(0..0, "x".to_string())`).
    if let Some(start) = body.find('"')
        && let Some(end) = body.rfind('"')
        && end > start
        && !body.starts_with('[')
    {
        return format!("`{}`", &body[start..=end]);
    }
    let body = body
        .trim_end_matches(".to_string()")
        .trim_end_matches(".into()")
        .to_string();
    format!("`{}`", body.replace('|', "\\|"))
}

/// Writes `name`'s section (at `path`) and then those of its tables.
fn section(out: &mut String, items: &Items, name: &str, path: &str, many: bool) {
    let Some(s) = items.structs.get(name) else {
        return;
    };
    let heading = if path.is_empty() {
        "Top level".to_string()
    } else if many {
        format!("`[[{path}]]`")
    } else {
        format!("`[{path}]`")
    };
    let _ = writeln!(out, "## {heading}\n");
    let about = docs(&s.attrs);
    if !about.is_empty() {
        let _ = writeln!(out, "{}\n", about.replace("<br>", "\n\n"));
    }
    let _ = writeln!(
        out,
        "| key | type | default | description |\n|---|---|---|---|"
    );
    let syn::Fields::Named(fields) = &s.fields else {
        return;
    };
    let mut nested = Vec::new();
    for f in &fields.named {
        let settings = serde(&f.attrs);
        if settings
            .iter()
            .any(|(k, _)| k == "skip" || k == "skip_deserializing")
        {
            continue;
        }
        let Some(ident) = &f.ident else { continue };
        let key = settings
            .iter()
            .find(|(k, _)| k == "rename")
            .and_then(|(_, v)| v.clone())
            .unwrap_or_else(|| ident.to_string());
        let mut sh = shape(&f.ty, items);
        let uses = |what: &str| settings.iter().any(|(k, _)| k == what);
        if settings
            .iter()
            .any(|(k, v)| k == "with" && v.as_deref() == Some("serde_duration"))
        {
            sh.words = toml_type("Duration").unwrap_or_default().to_string();
        }
        let default = match settings.iter().find(|(k, _)| k == "default") {
            Some((_, Some(f))) => default_of(f, items),
            Some((_, None)) if sh.optional => "unset".to_string(),
            Some((_, None)) => sh.zero.clone(),
            None if sh.optional => "unset".to_string(),
            None if uses("flatten") => "—".to_string(),
            None => "**required**".to_string(),
        };
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if let Some((t, many)) = &sh.table {
            nested.push((t.clone(), full.clone(), *many));
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {default} | {} |",
            sh.words,
            docs(&f.attrs)
        );
    }
    out.push('\n');
    for (t, full, many) in nested {
        section(out, items, &t, &full, many);
    }
}

fn generate() -> String {
    let items = Items::read();
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated by tests/config_reference.rs from the config structs \
         (src/config.rs and the connectors crate); do not edit by hand. \
         Regenerate: UPDATE_CONFIG_REFERENCE=1 cargo test --test config_reference -->\n\n\
         Every key telemine's TOML config accepts, generated from the structs \
         the config is read into; unknown keys are refused with their \
         file, line and column. `config/telemine.toml` is a commented \
         example of a whole config; `telemine check --config FILE` checks \
         one. Durations are written as strings with a unit (`\"500ms\"`, \
         `\"30s\"`, `\"5m\"`, `\"1h\"`).\n\n",
    );
    section(&mut out, &items, "Config", "", false);
    out.trim_end().to_string() + "\n"
}

#[test]
fn the_config_reference_is_generated_from_the_config_structs_and_up_to_date() {
    let path: PathBuf = repo().join("docs/CONFIG.md");
    let fresh = generate();
    // Every key the default config uses is in the reference.
    for key in [
        "bootstrap_servers",
        "timestamp_unit",
        "listen",
        "progress_interval",
    ] {
        assert!(
            fresh.contains(&format!("| `{key}` |")),
            "no `{key}` in:\n{fresh}"
        );
    }
    if std::env::var_os("UPDATE_CONFIG_REFERENCE").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/CONFIG.md");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/CONFIG.md is not what the config structs say; regenerate it with\n  UPDATE_CONFIG_REFERENCE=1 cargo test --test config_reference\nand commit it"
    );
}

/// The reference names every kind of model the config accepts (the list
/// lives in `telemine_model::Kind`; the doc comment is written by hand).
#[test]
fn the_reference_names_every_model_kind() {
    let fresh = generate();
    let row = fresh
        .lines()
        .find(|l| l.starts_with("| `kind` |"))
        .expect("a `kind` row");
    for kind in telemine_model::Kind::names() {
        assert!(
            row.contains(&format!("\"{kind}\"")),
            "`{kind}` missing from: {row}"
        );
    }
}

/// Webhook receivers and Alertmanagers declare the same HTTP client keys
/// (serde's `flatten` cannot share one struct under
/// `deny_unknown_fields`); they must not drift apart: same names, same
/// types, same TOML spelling. `telemine_alerting::http::ClientKeys` reads
/// them in one place.
#[test]
fn receivers_declare_the_http_client_keys_alike() {
    const SHARED: [&str; 8] = [
        "timeout",
        "max_retries",
        "backoff",
        "headers",
        "bearer_token",
        "bearer_token_file",
        "basic_auth",
        "tls",
    ];
    /// A key's Rust type and its serde attributes.
    type Declared = (String, Vec<(String, Option<String>)>);
    let items = Items::read();
    let keys = |name: &str| -> BTreeMap<String, Declared> {
        let s = &items.structs[name];
        s.fields
            .iter()
            .filter_map(|f| {
                let key = f.ident.as_ref()?.to_string();
                // The serde attributes but the default: the defaults may
                // differ (Alertmanager tries fewer times).
                let attrs: Vec<_> = serde(&f.attrs)
                    .into_iter()
                    .filter(|(k, _)| k != "default")
                    .collect();
                Some((key, (tidy(&f.ty.to_token_stream().to_string()), attrs)))
            })
            .collect()
    };
    let (webhook, alertmanager) = (keys("WebhookConfig"), keys("AlertmanagerConfig"));
    for key in SHARED {
        let (w, a) = (webhook.get(key), alertmanager.get(key));
        assert!(w.is_some(), "WebhookConfig lacks `{key}`");
        assert_eq!(
            w, a,
            "`{key}` differs between WebhookConfig and AlertmanagerConfig"
        );
    }
}
