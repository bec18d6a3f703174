//! `--name value` options shared by the scenarios.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// Parsed options.
#[derive(Debug, Default)]
pub struct Opts(HashMap<String, String>);

impl Opts {
    /// Parses `--name value` pairs.
    pub fn parse(mut it: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut m = HashMap::new();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else { bail!("unexpected argument {k:?}") };
            let v = it.next().with_context(|| format!("--{name} needs a value"))?;
            m.insert(name.to_string(), v);
        }
        Ok(Opts(m))
    }

    /// A numeric option with a default.
    pub fn num(&self, name: &str, default: u64) -> anyhow::Result<u64> {
        match self.0.get(name) {
            Some(v) => v.parse().with_context(|| format!("--{name} {v:?} is not a number")),
            None => Ok(default),
        }
    }

    /// A scratch directory: `--dir` (kept) or a fresh temporary one (removed on drop).
    pub fn scratch(&self) -> anyhow::Result<Scratch> {
        match self.0.get("dir") {
            Some(d) => {
                let p = PathBuf::from(d).join(format!("bench-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&p)?;
                Ok(Scratch { path: p.clone(), _tmp: None, owned: Some(p) })
            }
            None => {
                let t = tempfile::tempdir()?;
                Ok(Scratch { path: t.path().to_path_buf(), _tmp: Some(t), owned: None })
            }
        }
    }
}

/// A scratch directory removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    owned: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(p) = &self.owned {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Median of a non-empty sample.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}
