//! `docs/metrics.md` lists exactly the instruments the code records: the runtime's
//! catalog (`grain::metrics::CATALOG`), the process metrics of `grain-telemetry` and its
//! span processor's count.
//! After changing instruments, refresh the table with
//! `GRAIN_BLESS_DOCS=1 cargo test -p fizzbuzz --test catalog`.

use std::path::PathBuf;

const START: &str =
    "<!-- catalog:start (generated from the code; see crates/fizzbuzz/tests/catalog.rs) -->";
const END: &str = "<!-- catalog:end -->";

fn table() -> String {
    let mut s =
        String::from("| name | kind | unit | attributes | meaning |\n|---|---|---|---|---|\n");
    let attrs = |a: &[&str]| {
        if a.is_empty() {
            "—".to_string()
        } else {
            a.join(", ")
        }
    };
    for d in grain::metrics::CATALOG {
        s.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            d.name,
            d.kind.as_str(),
            d.unit,
            attrs(d.attributes),
            d.description
        ));
    }
    let telemetry = grain_telemetry::PROCESS_INSTRUMENTS.iter();
    for p in telemetry.chain(grain_telemetry::SDK_INSTRUMENTS) {
        s.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            p.name,
            p.kind,
            p.unit,
            attrs(p.attributes),
            p.description
        ));
    }
    s
}

#[test]
fn the_metrics_doc_lists_exactly_the_instruments_in_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!("{} has no catalog markers", path.display());
    };
    let current = &doc[start + START.len()..end];
    let want = format!("\n{}", table());
    if std::env::var_os("GRAIN_BLESS_DOCS").is_some() {
        let updated = format!("{}{START}{want}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    let got: Vec<&str> = current.trim().lines().collect();
    let expected: Vec<&str> = want.trim().lines().collect();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g, e,
            "docs/metrics.md catalog row {i} differs from the code (GRAIN_BLESS_DOCS=1 refreshes it)"
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "docs/metrics.md lists {} rows, the code {}",
        got.len(),
        expected.len()
    );
}
