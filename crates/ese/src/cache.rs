//! The buffer cache: committed page versions, shared by readers and the writer.
//!
//! Each cached page keeps its newest committed version and, while some reader still needs
//! them, the versions it superseded. A reader pins the LSN of the last commit installed when it
//! began and sees, for every page, the newest version at or below that LSN: a consistent state
//! without blocking the writer. A page loaded from disk is the newest committed version (dirty
//! or superseded versions are never evicted), so it is tagged LSN 0, visible to everyone.
//!
//! Dirty pages (committed but not written to the database file) carry two positions: the
//! begin LSN of the oldest unwritten change (the checkpoint may not pass it) and the end of the
//! newest commit record (the write-ahead rule: the page may be written only once the log is
//! durable up to there). Clean single-version pages are evicted when the cache is over its size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::lsn::Lsn;

/// (database id, page number).
pub(crate) type PageKey = (u32, u64);

#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub lsn: Lsn,
    pub img: Arc<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Dirty {
    /// Begin LSN of the oldest change not yet in the file.
    pub first: Lsn,
    /// End of the newest commit record that changed the page.
    pub commit_end: Lsn,
}

#[derive(Debug)]
struct Entry {
    versions: Vec<Version>,
    dirty: Option<Dirty>,
}

/// The cache proper; the instance keeps it behind a mutex.
#[derive(Debug)]
pub(crate) struct Cache {
    map: HashMap<PageKey, Entry>,
    /// Pinned reader snapshots and how many readers hold each.
    readers: BTreeMap<Lsn, usize>,
    /// Pages holding more than one version.
    multi: HashSet<PageKey>,
    capacity: usize,
    /// Number of dirty entries, kept as they change: every commit asks (cache pressure)
    /// under the writer lock, and counting would walk the whole map.
    dirty: usize,
    /// Begin LSN of the last installed commit: what a new reader sees.
    pub last_installed: Lsn,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::new(),
            readers: BTreeMap::new(),
            multi: HashSet::new(),
            capacity: capacity.max(16),
            dirty: 0,
            last_installed: Lsn(0),
        }
    }

    /// Pins a snapshot for a new reader.
    pub fn pin(&mut self) -> Lsn {
        let s = self.last_installed;
        *self.readers.entry(s).or_default() += 1;
        s
    }

    /// Releases a reader's snapshot and drops versions nobody needs any more.
    pub fn unpin(&mut self, s: Lsn) {
        if let Some(n) = self.readers.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                self.readers.remove(&s);
            }
        }
        let keys: Vec<PageKey> = self.multi.iter().copied().collect();
        for k in keys {
            self.prune(k);
        }
    }

    /// The version visible at snapshot `s`, if the page is cached.
    pub fn visible(&self, key: PageKey, s: Lsn) -> Option<Option<Arc<Vec<u8>>>> {
        let e = self.map.get(&key)?;
        Some(e.versions.iter().rev().find(|v| v.lsn <= s).map(|v| v.img.clone()))
    }

    /// The newest committed version, if cached.
    pub fn newest(&self, key: PageKey) -> Option<Arc<Vec<u8>>> {
        // An entry is created with a version and removed with its last, so `None` here means
        // "not cached" either way.
        self.map.get(&key).and_then(|e| e.versions.last()).map(|v| v.img.clone())
    }

    /// Whether the page is cached and dirty.
    pub fn is_dirty(&self, key: PageKey) -> bool {
        self.map.get(&key).is_some_and(|e| e.dirty.is_some())
    }

    /// Adds a page just read from disk (newest committed version).
    pub fn insert_loaded(&mut self, key: PageKey, img: Arc<Vec<u8>>) {
        self.map
            .entry(key)
            .or_insert_with(|| Entry { versions: vec![Version { lsn: Lsn(0), img }], dirty: None });
    }

    /// Installs a committed version.
    pub fn install(&mut self, key: PageKey, begin: Lsn, commit_end: Lsn, img: Arc<Vec<u8>>) {
        let e = self.map.entry(key).or_insert_with(|| Entry { versions: Vec::new(), dirty: None });
        e.versions.push(Version { lsn: begin, img });
        e.dirty = Some(match e.dirty {
            Some(d) => Dirty { first: d.first, commit_end },
            None => {
                self.dirty += 1;
                Dirty { first: begin, commit_end }
            }
        });
        if e.versions.len() > 1 {
            self.multi.insert(key);
            self.prune(key);
        }
        self.last_installed = self.last_installed.max(begin);
    }

    fn prune(&mut self, key: PageKey) {
        let Some(e) = self.map.get_mut(&key) else {
            self.multi.remove(&key);
            return;
        };
        let n = e.versions.len();
        let mut keep = vec![false; n];
        keep[n - 1] = true;
        for s in self.readers.keys() {
            if let Some(i) = e.versions.iter().rposition(|v| v.lsn <= *s) {
                keep[i] = true;
            }
        }
        let mut i = 0;
        e.versions.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        if e.versions.len() == 1 {
            self.multi.remove(&key);
        }
    }

    /// Dirty pages: (key, newest image, newest begin LSN, dirty info), ordered by key.
    pub fn dirty_pages(&self) -> Vec<(PageKey, Arc<Vec<u8>>, Lsn, Dirty)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|(k, e)| {
                let last = e.versions.last()?;
                e.dirty.map(|d| (*k, last.img.clone(), last.lsn, d))
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// Number of dirty pages.
    pub fn dirty_count(&self) -> usize {
        self.dirty
    }

    /// Marks a page clean after its newest version (begin LSN `lsn`) was written.
    pub fn mark_clean(&mut self, key: PageKey, lsn: Lsn) {
        if let Some(e) = self.map.get_mut(&key)
            && e.versions.last().is_some_and(|v| v.lsn == lsn)
            && e.dirty.take().is_some()
        {
            self.dirty -= 1;
        }
    }

    /// The oldest change not yet in a database file.
    pub fn min_dirty(&self) -> Option<Lsn> {
        self.map.values().filter_map(|e| e.dirty.map(|d| d.first)).min()
    }

    /// Whether the cache holds more pages than its capacity.
    pub fn over_capacity(&self) -> bool {
        self.map.len() > self.capacity
    }

    /// Whether dirty pages alone fill most of the cache (the lazy writer must run).
    pub fn dirty_pressure(&self) -> bool {
        self.dirty_count() * 4 >= self.capacity * 3
    }

    /// Evicts clean pages that every reader sees in their newest version until the cache is
    /// back under its capacity.
    pub fn evict(&mut self) {
        if !self.over_capacity() || self.map.len() == self.dirty {
            // Nothing over the size, or nothing clean to evict: no walk over the map.
            return;
        }
        let oldest = self.readers.keys().next().copied();
        let target = self.capacity * 7 / 8;
        let mut victims = Vec::new();
        for (k, e) in &self.map {
            if self.map.len() - victims.len() <= target {
                break;
            }
            if e.dirty.is_none()
                && e.versions.len() == 1
                && oldest.is_none_or(|o| e.versions[0].lsn <= o)
            {
                victims.push(*k);
            }
        }
        for k in victims {
            self.map.remove(&k);
        }
    }

    /// Forgets every page of a database.
    pub fn drop_db(&mut self, dbid: u32) {
        self.map.retain(|k, _| k.0 != dbid);
        self.multi.retain(|k| k.0 != dbid);
        self.dirty = self.map.values().filter(|e| e.dirty.is_some()).count();
    }

    /// Number of cached pages.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}
