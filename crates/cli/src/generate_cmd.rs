//! `shadowcopy generate`: man pages and shell completions, made from the command line's own
//! definition so that they can never disagree with `--help`.
//!
//! Hidden from `--help`: it is for packagers (`packaging/build-deb.sh` runs it), not for the
//! administrator, who finds the results already installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Generate {
    /// Writes one man page per command into a directory: shadowcopy.1 for the program,
    /// shadowcopy-backup.1 for a group, shadowcopy-backup-run.1 for a verb.
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the completion script for a shell on standard output.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// Runs `generate`; `cli` is the whole program's command, as clap defines it.
pub fn run(cli: clap::Command, what: &Generate) -> anyhow::Result<()> {
    match what {
        Generate::Man { out } => {
            let pages = man_pages(cli, out)?;
            println!("wrote {} man pages into {}", pages.len(), out.display());
            Ok(())
        }
        Generate::Completions { shell } => {
            let mut cli = cli;
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(*shell, &mut cli, "shadowcopy", &mut stdout);
            stdout.flush().context("writing the completion script")
        }
    }
}

/// Writes the page of `cli` and of every visible subcommand, at any depth, into `out`, and
/// returns the files written.
fn man_pages(cli: clap::Command, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The `help` subcommand is a clap artefact, not a verb of ours: no page for it. Building
    // gives every subcommand its display name (`shadowcopy-backup-run`), which names its page.
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    // Every page says which program and version it documents; by default a subcommand's
    // page would name only itself (`run`), with no version.
    let source = format!("shadowcopy {}", cli.get_version().unwrap_or_default());
    let date = page_date()?;
    let mut written = Vec::new();
    write_pages(&cli, out, &Title { source, date }, &mut written)?;
    Ok(written)
}

/// What the title line (`.TH`) of every page says besides the command's name.
struct Title {
    source: String,
    date: String,
}

/// The date on the pages, YYYY-MM-DD: `SOURCE_DATE_EPOCH` when set (reproducible builds:
/// `build-deb.sh` sets it to the last commit's time), today otherwise. Never empty: an empty
/// date argument vanishes from the `.TH` line, and roff then reads the source as the date.
fn page_date() -> anyhow::Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let (y, m, d) = civil_from_days(secs / 86_400);
    Ok(format!("{y:04}-{m:02}-{d:02}"))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn write_pages(
    cmd: &clap::Command,
    out: &Path,
    title: &Title,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(&title.source)
        .date(&title.date)
        .manual("Shadowcopy Manual");
    let path = man
        .generate_to(out)
        .with_context(|| format!("writing the man page of {}", display_name(cmd)))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, out, title, written)?;
    }
    Ok(())
}

fn display_name(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn days_since_the_epoch_are_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
