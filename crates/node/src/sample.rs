//! A ready-made configuration: two volumes (`logs`, `db`) under one directory, shadow storage
//! for `db` on `logs`, and one storage group `SG1` with one database `DB1` — the layout the
//! end-to-end tests and the benchmarks share, so that it is written down once.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// The choices a sample layout leaves open.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    /// The node's name.
    pub node: &'a str,
    /// Maximum size of the `db` volume's shadow storage (on `logs`); `None` for none.
    pub shadow_max: Option<&'a str>,
    pub circular_logging: bool,
    /// Lines appended to the `[node]` table (an `[api]` table may follow them).
    pub extra: &'a str,
}

impl Default for Sample<'_> {
    fn default() -> Self {
        Self { node: "mbx1", shadow_max: Some("1GiB"), circular_logging: false, extra: "" }
    }
}

impl Sample<'_> {
    /// The configuration text for a node living under `dir`.
    pub fn toml(&self, dir: &Path) -> String {
        let d = dir.display();
        let shadow = match self.shadow_max {
            Some(max) => {
                format!("[[shadow_storage]]\nfor = \"db\"\non = \"logs\"\nmax_size = \"{max}\"\n")
            }
            None => String::new(),
        };
        format!(
            r#"
[node]
name = "{node}"
data_dir = "{d}/data"
{extra}

[[volume]]
label = "logs"
path = "{d}/logs"
create = true

[[volume]]
label = "db"
path = "{d}/db"
create = true

{shadow}
[[storage_group]]
name = "SG1"
log_volume = "logs"
log_dir = "SG1"
circular_logging = {circular}

[[storage_group.database]]
name = "DB1"
volume = "db"
path = "SG1/DB1.edb"
"#,
            node = self.node,
            extra = self.extra,
            circular = self.circular_logging,
        )
    }

    /// The parsed configuration for a node living under `dir`.
    pub fn config(&self, dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(&self.toml(dir), Path::new("(sample configuration)"))
    }
}
