//! Fuzzing on stable Rust: property tests that throw arbitrary input at every parser an
//! attacker reaches (the request sanitiser and router, framing headers, the Cookie and
//! Authorization/API-key parsers) and at the two files people edit (the config, the policy
//! decision tables), plus the committed corpus of known attack cases in
//! `tests/fixtures/attack-corpus/`, replayed on every run.
//!
//! The properties: nothing panics; what is accepted is exactly what a strict reading allows
//! (a canonical path comes back unchanged, a cookie is read only when unambiguous, a key parses
//! only with its checksum); and every corpus case gets its recorded verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use crate::domain::apikeys::format;
use crate::domain::policy::{tables, PolicyEngine, PolicyStore};
use crate::pipeline::route::{Match, RouteTable};
use crate::pipeline::sanitise::{canonical_path, check_framing};
use crate::web::cookies;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/attack-corpus")
}

/// `(verdict, input)` per case of a corpus file, with `\n`, `\t`, `\0` and `\\` unescaped.
fn corpus(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(corpus_dir().join(file)).unwrap();
    let cases: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (verdict, input) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("{file}: no tab in {l:?}"));
            (verdict.to_owned(), unescape(input))
        })
        .collect();
    assert!(cases.len() >= 5, "{file} has cases");
    cases
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.clone().next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

fn shipped_routes() -> &'static RouteTable {
    static ROUTES: std::sync::OnceLock<RouteTable> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        RouteTable::load(
            &root.join("routes.toml"),
            &BTreeSet::from(["zones".to_owned()]),
        )
        .unwrap()
    })
}

/// What the sanitiser and router make of a path: `None` when refused before routing.
fn route_path(path: &str) -> Option<String> {
    let accepted = canonical_path(path).ok()?;
    assert_eq!(accepted, path, "a canonical path comes back unchanged");
    assert!(path.starts_with('/') && path.is_ascii());
    for bad in ["//", "/./", "/../", "\\", ";"] {
        assert!(!path.contains(bad), "{path} accepted with {bad}");
    }
    assert!(!path.ends_with("/.") && !path.ends_with("/.."));
    for method in [http::Method::GET, http::Method::POST, http::Method::DELETE] {
        match shipped_routes().find(&method, path) {
            Match::Found(route, params) => {
                // Every parameter the route binds is a non-empty segment of this path.
                let _ = route.resource_uid(&params);
                let _ = route.org_id(&params);
            }
            Match::MethodNotAllowed(allow) => assert!(!allow.is_empty()),
            Match::NotFound => {}
        }
    }
    Some(accepted.to_owned())
}

#[test]
fn the_path_corpus_gets_its_verdicts() {
    for (verdict, path) in corpus("paths.txt") {
        let got = route_path(&path);
        match verdict.as_str() {
            "refuse" => assert!(got.is_none(), "accepted: {path:?}"),
            "accept" => assert_eq!(got.as_deref(), Some(path.as_str()), "refused: {path:?}"),
            other => panic!("paths.txt: verdict {other}"),
        }
    }
}

/// Header pairs as the corpus writes them: `Name: value | Name: value`.
fn headers(spec: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for pair in spec.split(" | ") {
        let (name, value) = pair.split_once(':').unwrap();
        map.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    map
}

#[test]
fn the_framing_corpus_gets_its_verdicts() {
    for (verdict, spec) in corpus("framing.txt") {
        let got = check_framing(&headers(&spec));
        match verdict.as_str() {
            "refuse" => assert!(got.is_err(), "accepted: {spec:?}"),
            "accept" => assert!(got.is_ok(), "refused: {spec:?}"),
            other => panic!("framing.txt: verdict {other}"),
        }
    }
}

fn cookie_headers(values: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            map.append(http::header::COOKIE, v);
        }
    }
    map
}

#[test]
fn the_cookie_corpus_gets_its_verdicts() {
    for (verdict, header) in corpus("cookies.txt") {
        let map = cookie_headers(&[header.as_bytes()]);
        let got = cookies::read(&map, cookies::SESSION);
        match verdict.strip_prefix("value=") {
            Some(value) => assert_eq!(got, Some(value), "{header:?}"),
            None => {
                assert_eq!(verdict, "none");
                assert_eq!(got, None, "{header:?}");
            }
        }
    }
}

#[test]
fn the_authorization_corpus_never_parses() {
    for (verdict, key) in corpus("authorization.txt") {
        assert_eq!(verdict, "refuse");
        assert!(format::parse(&key).is_none(), "{key:?} parsed");
    }
}

#[test]
fn the_config_corpus_is_refused_with_an_error() {
    for (verdict, text) in corpus("config.txt") {
        assert_eq!(verdict, "refuse");
        let got = crate::config::Config::parse(&text, Path::new("corpus.toml"));
        assert!(got.is_err(), "accepted: {text:?}");
    }
}

fn engine() -> &'static PolicyEngine {
    static ENGINE: std::sync::OnceLock<PolicyEngine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        PolicyEngine::new(PolicyStore::load(&root).unwrap())
    })
}

/// Load `text` as the only decision table of a directory.
fn load_table(text: &str) -> Result<tables::Report, tables::TableError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), text).unwrap();
    tables::run(engine(), dir.path())
}

#[test]
fn the_table_corpus_is_refused_naming_the_file_or_fails_its_case() {
    for (verdict, text) in corpus("tables.txt") {
        match verdict.as_str() {
            "refuse" => {
                let e = load_table(&text).expect_err(&text).to_string();
                assert!(e.contains("t.toml"), "{e}");
            }
            "fail" => assert!(!load_table(&text).unwrap().passed(), "{text}"),
            other => panic!("tables.txt: verdict {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary paths, biased toward the characters attacks are made of.
    #[test]
    fn arbitrary_paths_are_refused_or_routed_unchanged(
        path in "/?([a-z0-9._~%/\\\\;:@!$&'()*+,=-]|%[0-9a-fA-F]{2}|\\.\\.){0,24}",
    ) {
        route_path(&path);
    }

    #[test]
    fn arbitrary_unicode_paths_never_panic(path in "\\PC{0,64}") {
        route_path(&path);
    }

    #[test]
    fn arbitrary_framing_headers_never_panic(
        lengths in proptest::collection::vec("[0-9+ ,x-]{0,22}", 0..3),
        codings in proptest::collection::vec("(chunked|gzip|identity|[a-zA-Z ,;=]{0,12})", 0..3),
    ) {
        let mut map = HeaderMap::new();
        for l in &lengths {
            if let Ok(v) = HeaderValue::from_str(l) {
                map.append(http::header::CONTENT_LENGTH, v);
            }
        }
        for c in &codings {
            if let Ok(v) = HeaderValue::from_str(c) {
                map.append(http::header::TRANSFER_ENCODING, v);
            }
        }
        let ok = check_framing(&map).is_ok();
        // Accepted framing is never ambiguous: at most one length or one plain `chunked`.
        if ok {
            let n_len = map.get_all(http::header::CONTENT_LENGTH).iter().count();
            let n_te = map.get_all(http::header::TRANSFER_ENCODING).iter().count();
            prop_assert!(n_len + n_te <= 1);
        }
    }

    #[test]
    fn arbitrary_cookie_headers_never_panic_and_read_only_unambiguous_sessions(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
        session in "[A-Za-z0-9_-]{1,16}",
        twice: bool,
    ) {
        let mut all: Vec<Vec<u8>> = values;
        all.push(format!("{}={session}", cookies::SESSION).into_bytes());
        if twice {
            all.push(format!("x=1; {}=other", cookies::SESSION).into_bytes());
        }
        let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
        let map = cookie_headers(&refs);
        let got = cookies::read(&map, cookies::SESSION);
        if twice {
            prop_assert_eq!(got, None, "two session cookies: neither is used");
        } else if let Some(v) = got {
            prop_assert!(!v.contains(';'));
        }
    }

    #[test]
    fn arbitrary_keys_never_panic(key in "\\PC{0,80}") {
        let _ = format::parse(&key);
    }

    /// Any one character changed in a genuine key breaks its checksum.
    #[test]
    fn a_key_with_one_character_changed_never_parses(at in 0usize..58, to in "[0-9A-Za-z_]") {
        let (_, key) = format::generate();
        prop_assert!(format::parse(&key).is_some());
        let mut bytes = key.as_bytes().to_vec();
        let at = at % bytes.len();
        let to = to.as_bytes()[0];
        prop_assume!(bytes[at] != to);
        bytes[at] = to;
        let forged = String::from_utf8(bytes).unwrap();
        prop_assert!(format::parse(&forged).is_none(), "{}", forged);
    }

    #[test]
    fn arbitrary_config_text_is_refused_or_loaded_never_panics(
        text in "(\\[[a-z_.]{0,12}\\]\n|[a-z_]{1,12} = (\"[^\"\n]{0,12}\"|[0-9]{1,6}|true|\\[\\])\n){0,12}",
    ) {
        let _ = crate::config::Config::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn arbitrary_decision_tables_are_refused_or_run_never_panic(
        text in "(\\[\\[case\\]\\]\n|(name|action|expect|principal|resource|context|policies) = (\"[^\"\n]{0,12}\"|\\{ [a-z]{1,6} = \"[a-z]{0,6}\" \\}|\\[\\])\n){0,10}",
    ) {
        let _ = load_table(&text);
    }
}
