//! Package sizes: each function's zip and the bootstrap in it, per architecture.

use crate::harness::FUNCTIONS;
use crate::report::Report;

/// Each function's package for both architectures, as `make package` builds them: the
/// zip Lambda stores and the bootstrap in it (unzipped by bench/run.sh). An architecture
/// not packaged in this run has no rows.
pub fn run(report: &mut Report) {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bin_dir = std::env::var("BENCH_BIN_DIR").unwrap_or_default();
    // BENCH_ARCHES=x86_64 did not build arm64: an arm64 zip left by an earlier build
    // would be reported as this run's.
    let arm64 = std::env::var("BENCH_ARCHES").as_deref() != Ok("x86_64");
    for function in FUNCTIONS.into_iter().chain(["stream"]) {
        for (arch, lambda_dir, unzipped) in [
            ("x86_64", "lambda", "pkg"),
            ("arm64", "lambda-arm64", "arm64"),
        ] {
            if arch == "arm64" && !arm64 {
                continue;
            }
            for (path, what) in [
                (
                    format!("{target}/{lambda_dir}/{function}/bootstrap.zip"),
                    "bootstrap.zip",
                ),
                (
                    format!("{bin_dir}/{function}.{unzipped}/bootstrap"),
                    "bootstrap",
                ),
            ] {
                if let Ok(meta) = std::fs::metadata(&path) {
                    let mb = meta.len() as f64 / 1048576.0;
                    report.add(
                        6,
                        "package size",
                        &format!("{function} ({arch}): {what}"),
                        "MB",
                        vec![mb],
                    );
                }
            }
        }
    }
}
