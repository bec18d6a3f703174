//! Which settings each storage group's commit gate follows when two reads of them race.
//!
//! The reconciler reads every storage group's settings at the start of a round and applies
//! them later in it; `copy settings` has the active read and apply them at once. A round
//! that read before the command changed them must not undo what the command applied, or
//! commits would go ungated until the next round. The rule: a read that started later wins.

use std::collections::BTreeMap;
use std::time::Instant;

use parking_lot::Mutex;
use replication::cluster::SgSettings;

/// The settings each commit gate follows and when their read started.
#[derive(Default)]
pub(crate) struct GateSettings(Mutex<BTreeMap<String, (Instant, SgSettings)>>);

impl GateSettings {
    /// The settings `sg`'s gate is to follow, given `settings` read starting at `read_at`:
    /// those, unless settings read later were followed already (then those again).
    pub(crate) fn follow(&self, sg: &str, read_at: Instant, settings: &SgSettings) -> SgSettings {
        let mut followed = self.0.lock();
        match followed.get(sg) {
            Some((at, newer)) if *at > read_at => newer.clone(),
            _ => {
                followed.insert(sg.to_string(), (read_at, settings.clone()));
                settings.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sync(n: u32) -> SgSettings {
        SgSettings { sync_copies: n, ..SgSettings::default() }
    }

    #[test]
    fn a_read_older_than_the_one_followed_does_not_undo_it() {
        let g = GateSettings::default();
        let round_read = Instant::now();
        let command_read = round_read + Duration::from_millis(1);
        // `copy settings` applied one synchronous copy; the round that read before it comes
        // in after with none: one stays.
        assert_eq!(g.follow("SG1", command_read, &sync(1)).sync_copies, 1);
        assert_eq!(g.follow("SG1", round_read, &sync(0)).sync_copies, 1);
        // A later read is followed, whatever it says; other storage groups are apart.
        assert_eq!(
            g.follow("SG1", command_read + Duration::from_millis(1), &sync(0)).sync_copies,
            0
        );
        assert_eq!(g.follow("SG2", round_read, &sync(2)).sync_copies, 2);
    }
}
