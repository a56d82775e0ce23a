//! The figures: each part adds its own to one `Report`, printed at the end as one table
//! (min / median / max of each figure's runs) and written to bench/results as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// One figure: its name, unit, and the value of each run.
struct Figure {
    name: String,
    unit: String,
    values: Vec<f64>,
}

#[derive(Default)]
pub struct Report {
    /// (display order, section) -> figures
    rows: BTreeMap<(usize, String), Vec<Figure>>,
    pub notes: Vec<String>,
}

impl Report {
    /// One figure of `section`; sections are shown by `order`, then by name.
    pub fn add(&mut self, order: usize, section: &str, figure: &str, unit: &str, values: Vec<f64>) {
        self.rows
            .entry((order, section.to_string()))
            .or_default()
            .push(Figure {
                name: figure.to_string(),
                unit: unit.to_string(),
                values,
            });
    }

    /// The median of a figure already added (by its name), as the table prints it.
    pub fn median(&self, figure: &str) -> Option<f64> {
        let values = &self
            .rows
            .values()
            .flatten()
            .find(|f| f.name == figure)?
            .values;
        (!values.is_empty()).then(|| stats(values).1)
    }

    /// Prints the table and writes bench/results/latest.json (quick.json in quick mode).
    /// With `only` (BENCH_ONLY), the file keeps the other parts' earlier figures.
    pub fn finish(mut self, quick: bool, only: &str) -> anyhow::Result<()> {
        if !quick && std::env::var("BENCH_PROFILE").as_deref() == Ok("debug") {
            self.notes.push(format!(
                "BENCH_PROFILE=debug: the {} figures come from a debug build of the local server",
                if only.is_empty() { "full" } else { only }
            ));
        }
        if quick {
            self.notes.push(
                "quick mode: debug build, short runs; proves the suite works, not a speed measurement"
                    .into(),
            );
        }

        let machine = machine();
        println!(
            "\nchatroom-lambda benchmark ({}) on {machine}",
            if quick { "quick" } else { "full" }
        );
        println!(
            "{:<66} {:>10} {:>10} {:>10}  unit",
            "figure", "min", "median", "max"
        );
        let mut json_rows = Vec::new();
        for ((_, section), figures) in &self.rows {
            println!("-- {section}");
            for Figure {
                name: figure,
                unit,
                values,
            } in figures
            {
                let (min, med, max) = stats(values);
                println!("{figure:<66} {min:>10.2} {med:>10.2} {max:>10.2}  {unit}");
                json_rows.push(json!({ "section": section, "figure": figure, "unit": unit, "min": min, "median": med, "max": max, "runs": values.len(), "values": values }));
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        // Quick runs (debug build) go beside, never over, the committed full-run figures.
        let path = if quick {
            "bench/results/quick.json"
        } else {
            "bench/results/latest.json"
        };
        let mut out = json!({ "date": chrono::Utc::now().to_rfc3339(), "mode": if quick { "quick" } else { "full" }, "machine": machine, "figures": json_rows, "notes": self.notes });
        if !only.is_empty()
            && let Ok(text) = std::fs::read_to_string(path)
            && let Ok(mut previous) = serde_json::from_str::<Value>(&text)
        {
            // A partial run replaces its own figures and keeps the others, saying so.
            let fresh: Vec<Value> = out["figures"].as_array().cloned().unwrap_or_default();
            let names: Vec<&Value> = fresh.iter().map(|f| &f["figure"]).collect();
            let mut figures: Vec<Value> = previous["figures"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| !names.contains(&&f["figure"]))
                .collect();
            figures.extend(fresh.iter().cloned());
            previous["figures"] = Value::Array(figures);
            let mut notes: Vec<Value> = previous["notes"].as_array().cloned().unwrap_or_default();
            notes.push(Value::String(format!(
                "{}: BENCH_ONLY={only} run on {machine}; its figures replaced their earlier values",
                chrono::Utc::now().to_rfc3339()
            )));
            notes.extend(out["notes"].as_array().cloned().unwrap_or_default());
            previous["notes"] = Value::Array(notes);
            out = previous;
        }
        std::fs::create_dir_all("bench/results")?;
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        println!("results written to {path}");
        Ok(())
    }
}

/// (min, median, max) of a figure's runs; of an even count, the upper middle one.
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Cores, memory and CPU model, for the heading.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    format!(
        "{} cores, {:.0} GiB, {cpu}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem as f64 / 1048576.0
    )
}
