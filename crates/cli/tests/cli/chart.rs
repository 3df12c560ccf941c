//! The Helm chart's files that must follow the code: its CustomResourceDefinitions
//! are what `remaudit crdgen` prints. (The chart itself is linted, rendered and
//! validated by `scripts/chart-check`.)

use std::path::PathBuf;

use crate::helpers::remaudit;

/// The chart's CRD file, relative to the repository root.
const CHART_CRDS: &str = "deploy/helm/remaudit/crds/crds.yaml";

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn chart_crds_equal_crdgen_output() {
    let path = repository_root().join(CHART_CRDS);
    let in_chart = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let out = remaudit()
        .arg("crdgen")
        .output()
        .expect("run remaudit crdgen");
    assert!(out.status.success(), "remaudit crdgen failed");
    let generated = String::from_utf8(out.stdout).expect("crdgen prints UTF-8");
    // Not assert_eq!: a diff of two 500-line documents says less than the fix.
    assert!(
        in_chart == generated,
        "{CHART_CRDS} differs from `remaudit crdgen`: the chart would install other \
         CustomResourceDefinitions than the controller's. Regenerate it from the repository root with\n  \
         cargo run -q --bin remaudit -- crdgen > {CHART_CRDS}\nand commit it (first differing line: {})",
        first_difference(&in_chart, &generated)
    );
}

/// The 1-based number of the first line where `a` and `b` differ.
fn first_difference(a: &str, b: &str) -> usize {
    let mut left = a.lines();
    let mut right = b.lines();
    let mut line = 1;
    loop {
        match (left.next(), right.next()) {
            (None, None) => return line,
            (l, r) if l != r => return line,
            _ => line += 1,
        }
    }
}
