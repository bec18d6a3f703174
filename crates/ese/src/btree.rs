//! B+trees over database pages, the page allocator and the table catalog.
//!
//! Nodes are decoded into owned structures, changed, and encoded back; a transaction works on
//! private page copies (see [`crate::txn`]) so none of this is ever visible half-done.
//!
//! - Leaf: sorted entries `(key, value)`; a value too large to sit inline (more than a quarter of
//!   the page with its key) lives in a chain of overflow pages and the leaf keeps its length and
//!   first page. Message bodies of several MiB are such chains.
//! - Internal: `n` separator keys and `n + 1` children; keys `>= keys[i]` live right of it.
//! - The root page of a table never moves: when it splits, its content moves to a new child.
//!   So the catalog (table name → root page, in page 2) is written once per table.
//! - Deletes do not rebalance: an emptied leaf stays in the tree until it is reused by later
//!   inserts, and the searches below skip empty subtrees. Simpler and crash-safe by
//!   construction; space of emptied overflow chains returns to the free list immediately.
//!
//! Page 2 (the root page) holds the allocator state: the next never-used page number and the
//! head of the free list (a chain of free pages).

use std::sync::Arc;

use crate::codec::{Reader, Writer, get_u32, get_u64, put_u32, put_u64};
use crate::error::{EngineError, Result};
use crate::page::{self, PAGE_HEADER, PageType, ROOT_PGNO};

/// Read access to the pages of one database as one consistent version.
pub(crate) trait Pages {
    fn page_size(&self) -> usize;
    fn read(&self, pgno: u64) -> Result<Arc<Vec<u8>>>;
    /// A corruption error for a page whose content does not parse.
    fn corrupt(&self, pgno: u64, why: String) -> EngineError;
}

/// Write access: pages written here are private to a transaction until it commits.
pub(crate) trait PagesMut: Pages {
    /// Replaces a whole page image (the commit finds the changed bytes by comparing).
    fn write(&mut self, pgno: u64, page: Vec<u8>);
    /// Changes a page in place: `f` edits the transaction's image of the page and returns
    /// the byte ranges `[start, end)` of the page it changed, so the commit logs those ranges
    /// without comparing the page with its previous version.
    fn modify(&mut self, pgno: u64, f: &mut dyn FnMut(&mut [u8]) -> Changes) -> Result<()>;
}

/// Byte ranges `[start, end)` of a page changed by [`PagesMut::modify`] (at most two: a
/// leaf's entry count and the entries from the change on).
pub(crate) type Changes = [(usize, usize); 2];

/// Largest key.
pub fn max_key_len(page_size: usize) -> usize {
    ((page_size - PAGE_HEADER) / 8 - 16).min(1024)
}

fn body_cap(ps: usize) -> usize {
    ps - PAGE_HEADER
}

#[derive(Debug, Clone)]
enum Val {
    Inline(Vec<u8>),
    Overflow { len: u64, first: u64 },
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(Vec<(Vec<u8>, Val)>),
    Internal { keys: Vec<Vec<u8>>, children: Vec<u64> },
}

fn leaf_entry_len(k: &[u8], v: &Val) -> usize {
    3 + k.len()
        + match v {
            Val::Inline(b) => 4 + b.len(),
            Val::Overflow { .. } => 16,
        }
}

impl Node {
    fn encoded_len(&self) -> usize {
        match self {
            Node::Leaf(e) => 3 + e.iter().map(|(k, v)| leaf_entry_len(k, v)).sum::<usize>(),
            Node::Internal { keys, .. } => 11 + keys.iter().map(|k| 10 + k.len()).sum::<usize>(),
        }
    }

    fn encode(&self, ps: usize) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Node::Leaf(entries) => {
                w.u8(PageType::Leaf as u8);
                w.u16(entries.len() as u16);
                for (k, v) in entries {
                    w.u16(k.len() as u16);
                    match v {
                        Val::Inline(b) => {
                            w.u8(0);
                            w.u32(b.len() as u32);
                            w.bytes(k);
                            w.bytes(b);
                        }
                        Val::Overflow { len, first } => {
                            w.u8(1);
                            w.u64(*len);
                            w.u64(*first);
                            w.bytes(k);
                        }
                    }
                }
            }
            Node::Internal { keys, children } => {
                w.u8(PageType::Internal as u8);
                w.u16(keys.len() as u16);
                w.u64(children[0]);
                for (k, c) in keys.iter().zip(&children[1..]) {
                    w.u16(k.len() as u16);
                    w.bytes(k);
                    w.u64(*c);
                }
            }
        }
        let mut p = vec![0u8; ps];
        p[PAGE_HEADER..PAGE_HEADER + w.buf.len()].copy_from_slice(&w.buf);
        p
    }

    fn decode(body: &[u8]) -> Option<Node> {
        let mut r = Reader::new(body);
        let ty = r.u8().ok()?;
        let n = r.u16().ok()? as usize;
        match PageType::from_u8(ty)? {
            PageType::Leaf => {
                let mut e = Vec::with_capacity(n);
                for _ in 0..n {
                    let kl = r.u16().ok()? as usize;
                    let flag = r.u8().ok()?;
                    if flag == 0 {
                        let vl = r.u32().ok()? as usize;
                        let k = r.take(kl).ok()?.to_vec();
                        e.push((k, Val::Inline(r.take(vl).ok()?.to_vec())));
                    } else {
                        let len = r.u64().ok()?;
                        let first = r.u64().ok()?;
                        e.push((r.take(kl).ok()?.to_vec(), Val::Overflow { len, first }));
                    }
                }
                Some(Node::Leaf(e))
            }
            PageType::Internal => {
                let mut keys = Vec::with_capacity(n);
                let mut children = vec![r.u64().ok()?];
                for _ in 0..n {
                    let kl = r.u16().ok()? as usize;
                    keys.push(r.take(kl).ok()?.to_vec());
                    children.push(r.u64().ok()?);
                }
                Some(Node::Internal { keys, children })
            }
            _ => None,
        }
    }
}

fn read_node<P: Pages + ?Sized>(p: &P, pgno: u64) -> Result<Node> {
    let img = p.read(pgno)?;
    Node::decode(&img[PAGE_HEADER..]).ok_or_else(|| p.corrupt(pgno, "not a B+tree node".into()))
}

// ---------------------------------------------------------------------------------------------
// Searches in encoded nodes. A point operation reads one node per level; decoding a node
// copies every key (and, in a leaf, every value) into its own allocation, which for a full
// 32 KiB page is most of the cost of a 1 KiB put. These read the encoded page where it
// lies. Each returns `None` on anything malformed; the decoding path then runs and reports
// the corruption.

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The child of an encoded internal node (`body`: the page from its type byte on) to descend
/// into for `key`: the one right of the last separator `<= key`.
fn raw_child(body: &[u8], key: &[u8]) -> Option<u64> {
    let n = le16(body, 1)?;
    let mut child = le64(body, 3)?;
    let mut off = 11;
    for _ in 0..n {
        let kl = le16(body, off)?;
        let k = body.get(off + 2..off + 2 + kl)?;
        if k > key {
            break;
        }
        child = le64(body, off + 2 + kl)?;
        off += 10 + kl;
    }
    Some(child)
}

/// Where a key sits in an encoded leaf (offsets into `body`, the page from its type byte on).
#[derive(Debug, Clone, Copy)]
struct LeafSpot {
    /// Number of entries.
    count: usize,
    /// The entry holding the key, or the first entry after it (or `end`).
    at: usize,
    /// The key's value, when the key is present.
    found: Option<SpotVal>,
    /// Just past the last entry.
    end: usize,
}

#[derive(Debug, Clone, Copy)]
enum SpotVal {
    /// The entry is `entry_len` bytes; its value `len` bytes at `at`.
    Inline {
        entry_len: usize,
        at: usize,
        len: usize,
    },
    Overflow {
        len: u64,
        first: u64,
    },
}

fn leaf_spot(body: &[u8], key: &[u8]) -> Option<LeafSpot> {
    let count = le16(body, 1)?;
    let mut off = 3;
    let mut hit: Option<(usize, Option<SpotVal>)> = None;
    for _ in 0..count {
        let kl = le16(body, off)?;
        let (key_at, len, val) = if *body.get(off + 2)? == 0 {
            let vl = le32(body, off + 3)?;
            let len = 7 + kl + vl;
            (off + 7, len, SpotVal::Inline { entry_len: len, at: off + 7 + kl, len: vl })
        } else {
            let val = SpotVal::Overflow { len: le64(body, off + 3)?, first: le64(body, off + 11)? };
            (off + 19, 19 + kl, val)
        };
        if off + len > body.len() {
            return None;
        }
        if hit.is_none() {
            match body[key_at..key_at + kl].cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => hit = Some((off, Some(val))),
                std::cmp::Ordering::Greater => hit = Some((off, None)),
            }
        }
        off += len;
    }
    let (at, found) = hit.unwrap_or((off, None));
    Some(LeafSpot { count, at, found, end: off })
}

/// The leaf (page number and image) where `key` lives or would go, found through encoded
/// nodes; `None` when a node on the way is not well formed.
fn raw_leaf<P: Pages + ?Sized>(
    p: &P,
    root: u64,
    key: &[u8],
) -> Result<Option<(u64, Arc<Vec<u8>>)>> {
    let mut pg = root;
    for _ in 0..64 {
        let img = p.read(pg)?;
        let body = &img[PAGE_HEADER..];
        match PageType::from_u8(body[0]) {
            Some(PageType::Leaf) => return Ok(Some((pg, img))),
            Some(PageType::Internal) => match raw_child(body, key) {
                Some(c) => pg = c,
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Inserts or replaces an inline value in the leaf where it belongs, in place, when it fits
/// there and the entry it replaces (if any) is inline too; false when the general path must
/// run (a split, an overflow value to free, a malformed node). The change is the entry count
/// and the entries from the key on (which move), so that is what the commit logs.
fn put_in_place<P: PagesMut + ?Sized>(
    p: &mut P,
    root: u64,
    key: &[u8],
    value: &[u8],
) -> Result<bool> {
    let Some((pg, img)) = raw_leaf(p, root, key)? else { return Ok(false) };
    let Some(spot) = leaf_spot(&img[PAGE_HEADER..], key) else { return Ok(false) };
    drop(img);
    let new_len = 7 + key.len() + value.len();
    let old_len = match spot.found {
        None if spot.count >= u16::MAX as usize => return Ok(false),
        None => 0,
        Some(SpotVal::Inline { entry_len, .. }) => entry_len,
        Some(SpotVal::Overflow { .. }) => return Ok(false),
    };
    let new_end = spot.end - old_len + new_len;
    if new_end > body_cap(p.page_size()) {
        return Ok(false);
    }
    let (at, end) = (spot.at, spot.end);
    p.modify(pg, &mut |page| {
        let body = &mut page[PAGE_HEADER..];
        if new_len != old_len {
            body.copy_within(at + old_len..end, at + new_len);
            if new_end < end {
                body[new_end..end].fill(0);
            }
        }
        body[at..at + 2].copy_from_slice(&(key.len() as u16).to_le_bytes());
        body[at + 2] = 0;
        body[at + 3..at + 7].copy_from_slice(&(value.len() as u32).to_le_bytes());
        body[at + 7..at + 7 + key.len()].copy_from_slice(key);
        body[at + 7 + key.len()..at + new_len].copy_from_slice(value);
        let count = if old_len == 0 {
            body[1..3].copy_from_slice(&((spot.count + 1) as u16).to_le_bytes());
            (PAGE_HEADER + 1, PAGE_HEADER + 3)
        } else {
            (0, 0)
        };
        let moved = if new_len == old_len { at + new_len } else { end.max(new_end) };
        [count, (PAGE_HEADER + at, PAGE_HEADER + moved)]
    })?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Root page: allocator and catalog.

struct RootPage {
    next_unused: u64,
    free_head: u64,
    tables: Vec<(String, u64)>,
}

impl RootPage {
    fn read<P: Pages + ?Sized>(p: &P) -> Result<RootPage> {
        let img = p.read(ROOT_PGNO)?;
        let body = &img[PAGE_HEADER..];
        let bad = || p.corrupt(ROOT_PGNO, "not a root page".into());
        if body[0] != PageType::Root as u8 {
            return Err(bad());
        }
        let mut r = Reader::new(&body[1..]);
        let next_unused = r.u64().map_err(|_| bad())?;
        let free_head = r.u64().map_err(|_| bad())?;
        let n = r.u32().map_err(|_| bad())?;
        let mut tables = Vec::new();
        for _ in 0..n {
            let name = r.string().map_err(|_| bad())?;
            tables.push((name, r.u64().map_err(|_| bad())?));
        }
        Ok(RootPage { next_unused, free_head, tables })
    }

    fn write<P: PagesMut + ?Sized>(&self, p: &mut P) -> Result<()> {
        let ps = p.page_size();
        let mut w = Writer::new();
        w.u8(PageType::Root as u8);
        w.u64(self.next_unused);
        w.u64(self.free_head);
        w.u32(self.tables.len() as u32);
        for (n, r) in &self.tables {
            w.str(n);
            w.u64(*r);
        }
        if w.buf.len() > body_cap(ps) {
            return Err(EngineError::TooLarge {
                what: "table catalog",
                len: w.buf.len(),
                max: body_cap(ps),
            });
        }
        let mut img = vec![0u8; ps];
        img[PAGE_HEADER..PAGE_HEADER + w.buf.len()].copy_from_slice(&w.buf);
        p.write(ROOT_PGNO, img);
        Ok(())
    }
}

/// The root page of a brand-new database.
pub(crate) fn init_root(ps: usize) -> Vec<u8> {
    let mut img = page::new_page(ps, PageType::Root);
    put_u64(&mut img, PAGE_HEADER + 1, ROOT_PGNO + 1);
    img
}

fn alloc<P: PagesMut + ?Sized>(p: &mut P) -> Result<u64> {
    let mut root = RootPage::read(p)?;
    let pgno = if root.free_head != 0 {
        let pg = root.free_head;
        let img = p.read(pg)?;
        if img[PAGE_HEADER] != PageType::Free as u8 {
            return Err(p.corrupt(pg, "free-list page is not free".into()));
        }
        root.free_head = get_u64(&img, PAGE_HEADER + 1);
        pg
    } else {
        root.next_unused += 1;
        root.next_unused - 1
    };
    root.write(p)?;
    Ok(pgno)
}

fn free<P: PagesMut + ?Sized>(p: &mut P, pgno: u64) -> Result<()> {
    let mut root = RootPage::read(p)?;
    let mut img = page::new_page(p.page_size(), PageType::Free);
    put_u64(&mut img, PAGE_HEADER + 1, root.free_head);
    p.write(pgno, img);
    root.free_head = pgno;
    root.write(p)
}

/// The root page of table `name`.
pub(crate) fn find_table<P: Pages + ?Sized>(p: &P, name: &str) -> Result<Option<u64>> {
    Ok(RootPage::read(p)?.tables.into_iter().find(|(n, _)| n == name).map(|(_, r)| r))
}

/// Names of all tables.
pub(crate) fn list_tables<P: Pages + ?Sized>(p: &P) -> Result<Vec<String>> {
    Ok(RootPage::read(p)?.tables.into_iter().map(|(n, _)| n).collect())
}

/// Creates an empty table; `None` if it exists.
pub(crate) fn create_table<P: PagesMut + ?Sized>(p: &mut P, name: &str) -> Result<Option<u64>> {
    if find_table(p, name)?.is_some() {
        return Ok(None);
    }
    let pg = alloc(p)?;
    p.write(pg, Node::Leaf(Vec::new()).encode(p.page_size()));
    let mut root = RootPage::read(p)?;
    root.tables.push((name.to_string(), pg));
    root.write(p)?;
    Ok(Some(pg))
}

// ---------------------------------------------------------------------------------------------
// Values.

fn overflow_cap(ps: usize) -> usize {
    body_cap(ps) - 13
}

fn write_overflow<P: PagesMut + ?Sized>(p: &mut P, value: &[u8]) -> Result<u64> {
    let ps = p.page_size();
    let chunks: Vec<&[u8]> = value.chunks(overflow_cap(ps)).collect();
    let pgnos = (0..chunks.len()).map(|_| alloc(p)).collect::<Result<Vec<_>>>()?;
    for (i, c) in chunks.iter().enumerate() {
        let mut img = page::new_page(ps, PageType::Overflow);
        put_u64(&mut img, PAGE_HEADER + 1, pgnos.get(i + 1).copied().unwrap_or(0));
        put_u32(&mut img, PAGE_HEADER + 9, c.len() as u32);
        img[PAGE_HEADER + 13..PAGE_HEADER + 13 + c.len()].copy_from_slice(c);
        p.write(pgnos[i], img);
    }
    Ok(pgnos[0])
}

fn overflow_chain<P: Pages + ?Sized>(p: &P, len: u64, first: u64) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut out = Vec::with_capacity(len as usize);
    let mut pages = Vec::new();
    let mut pg = first;
    while (out.len() as u64) < len {
        if pg == 0 || pages.len() as u64 > len {
            return Err(p.corrupt(
                first,
                format!("overflow chain ends early at {} of {len} bytes", out.len()),
            ));
        }
        let img = p.read(pg)?;
        if img[PAGE_HEADER] != PageType::Overflow as u8 {
            return Err(p.corrupt(pg, "expected an overflow page".into()));
        }
        let n = get_u32(&img, PAGE_HEADER + 9) as usize;
        if n > overflow_cap(p.page_size()) {
            return Err(p.corrupt(pg, format!("overflow length {n} too large")));
        }
        out.extend_from_slice(&img[PAGE_HEADER + 13..PAGE_HEADER + 13 + n]);
        pages.push(pg);
        pg = get_u64(&img, PAGE_HEADER + 1);
    }
    Ok((out, pages))
}

fn load<P: Pages + ?Sized>(p: &P, v: &Val) -> Result<Vec<u8>> {
    match v {
        Val::Inline(b) => Ok(b.clone()),
        Val::Overflow { len, first } => Ok(overflow_chain(p, *len, *first)?.0),
    }
}

fn free_val<P: PagesMut + ?Sized>(p: &mut P, v: &Val) -> Result<()> {
    if let Val::Overflow { len, first } = v {
        let (_, pages) = overflow_chain(p, *len, *first)?;
        for pg in pages {
            free(p, pg)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Point operations.

/// The value stored under `key`.
pub(crate) fn get<P: Pages + ?Sized>(p: &P, root: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
    if let Some((_, img)) = raw_leaf(p, root, key)?
        && let Some(spot) = leaf_spot(&img[PAGE_HEADER..], key)
    {
        return match spot.found {
            None => Ok(None),
            Some(SpotVal::Inline { at, len, .. }) => {
                Ok(Some(img[PAGE_HEADER + at..PAGE_HEADER + at + len].to_vec()))
            }
            Some(SpotVal::Overflow { len, first }) => Ok(Some(overflow_chain(p, len, first)?.0)),
        };
    }
    let mut pg = root;
    loop {
        match read_node(p, pg)? {
            Node::Leaf(e) => {
                return match e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                    Ok(i) => Ok(Some(load(p, &e[i].1)?)),
                    Err(_) => Ok(None),
                };
            }
            Node::Internal { keys, children } => {
                pg = children[keys.partition_point(|k| k.as_slice() <= key)];
            }
        }
    }
}

/// Inserts or replaces.
pub(crate) fn put<P: PagesMut + ?Sized>(
    p: &mut P,
    root: u64,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    let ps = p.page_size();
    if key.len() > max_key_len(ps) {
        return Err(EngineError::TooLarge { what: "key", len: key.len(), max: max_key_len(ps) });
    }
    let inline = 7 + key.len() + value.len() <= body_cap(ps) / 4;
    if inline && put_in_place(p, root, key, value)? {
        return Ok(());
    }
    let val = if inline {
        Val::Inline(value.to_vec())
    } else {
        Val::Overflow { len: value.len() as u64, first: write_overflow(p, value)? }
    };
    if let Some((sep, right)) = insert(p, root, key, val)? {
        // Keep the root's page number: move its (left-half) content to a new page.
        let left = alloc(p)?;
        let img = p.read(root)?;
        p.write(left, img.as_ref().clone());
        p.write(root, Node::Internal { keys: vec![sep], children: vec![left, right] }.encode(ps));
    }
    Ok(())
}

fn split_point(sizes: &[usize]) -> usize {
    let total: usize = sizes.iter().sum();
    let mut acc = 0;
    for (i, s) in sizes.iter().enumerate() {
        acc += s;
        if acc * 2 >= total {
            return (i + 1).clamp(1, sizes.len() - 1);
        }
    }
    sizes.len() / 2
}

fn insert<P: PagesMut + ?Sized>(
    p: &mut P,
    pgno: u64,
    key: &[u8],
    val: Val,
) -> Result<Option<(Vec<u8>, u64)>> {
    let ps = p.page_size();
    match read_node(p, pgno)? {
        Node::Leaf(mut e) => {
            match e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                Ok(i) => {
                    let old = std::mem::replace(&mut e[i].1, val);
                    free_val(p, &old)?;
                }
                Err(i) => e.insert(i, (key.to_vec(), val)),
            }
            let node = Node::Leaf(e);
            if node.encoded_len() <= body_cap(ps) {
                p.write(pgno, node.encode(ps));
                return Ok(None);
            }
            let Node::Leaf(mut e) = node else { unreachable!() };
            let sizes: Vec<usize> = e.iter().map(|(k, v)| leaf_entry_len(k, v)).collect();
            let right_entries = e.split_off(split_point(&sizes));
            let sep = right_entries[0].0.clone();
            let right = alloc(p)?;
            p.write(pgno, Node::Leaf(e).encode(ps));
            p.write(right, Node::Leaf(right_entries).encode(ps));
            Ok(Some((sep, right)))
        }
        Node::Internal { mut keys, mut children } => {
            let idx = keys.partition_point(|k| k.as_slice() <= key);
            let Some((sep, right)) = insert(p, children[idx], key, val)? else {
                return Ok(None);
            };
            keys.insert(idx, sep);
            children.insert(idx + 1, right);
            let node = Node::Internal { keys, children };
            if node.encoded_len() <= body_cap(ps) {
                p.write(pgno, node.encode(ps));
                return Ok(None);
            }
            let Node::Internal { mut keys, mut children } = node else { unreachable!() };
            let sizes: Vec<usize> = keys.iter().map(|k| 10 + k.len()).collect();
            let mid = split_point(&sizes);
            let right_keys = keys.split_off(mid + 1);
            #[allow(clippy::expect_used)] // a split page holds at least two keys
            let up = keys.pop().expect("split keeps a middle key");
            let right_children = children.split_off(mid + 1);
            let right = alloc(p)?;
            p.write(pgno, Node::Internal { keys, children }.encode(ps));
            p.write(
                right,
                Node::Internal { keys: right_keys, children: right_children }.encode(ps),
            );
            Ok(Some((up, right)))
        }
    }
}

/// Deletes `key`; whether it existed.
pub(crate) fn delete<P: PagesMut + ?Sized>(p: &mut P, root: u64, key: &[u8]) -> Result<bool> {
    let mut pg = root;
    loop {
        match read_node(p, pg)? {
            Node::Leaf(mut e) => {
                let Ok(i) = e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) else {
                    return Ok(false);
                };
                let (_, v) = e.remove(i);
                p.write(pg, Node::Leaf(e).encode(p.page_size()));
                free_val(p, &v)?;
                return Ok(true);
            }
            Node::Internal { keys, children } => {
                pg = children[keys.partition_point(|k| k.as_slice() <= key)];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ordered search for cursors.

/// Which neighbour of a key a cursor search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seek {
    /// First key >= k.
    Ge,
    /// First key > k.
    Gt,
    /// Last key <= k.
    Le,
    /// Last key < k.
    Lt,
}

/// Finds the entry next to `key` (`None` = from the start for Ge/Gt, from the end for Le/Lt).
pub(crate) fn seek<P: Pages + ?Sized>(
    p: &P,
    root: u64,
    key: Option<&[u8]>,
    mode: Seek,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    match find(p, root, key, mode, 0)? {
        Some((k, v)) => Ok(Some((k, load(p, &v)?))),
        None => Ok(None),
    }
}

fn find<P: Pages + ?Sized>(
    p: &P,
    pgno: u64,
    key: Option<&[u8]>,
    mode: Seek,
    depth: usize,
) -> Result<Option<(Vec<u8>, Val)>> {
    if depth > 64 {
        return Err(p.corrupt(pgno, "B+tree deeper than 64 levels (cycle?)".into()));
    }
    let forward = matches!(mode, Seek::Ge | Seek::Gt);
    match read_node(p, pgno)? {
        Node::Leaf(e) => {
            let hit = match (key, mode) {
                (None, Seek::Ge | Seek::Gt) => e.first(),
                (None, _) => e.last(),
                (Some(k), Seek::Ge) => e.get(e.partition_point(|(x, _)| x.as_slice() < k)),
                (Some(k), Seek::Gt) => e.get(e.partition_point(|(x, _)| x.as_slice() <= k)),
                (Some(k), Seek::Le) => {
                    e.partition_point(|(x, _)| x.as_slice() <= k).checked_sub(1).map(|i| &e[i])
                }
                (Some(k), Seek::Lt) => {
                    e.partition_point(|(x, _)| x.as_slice() < k).checked_sub(1).map(|i| &e[i])
                }
            };
            Ok(hit.cloned())
        }
        Node::Internal { keys, children } => {
            let start = match (key, mode) {
                (None, _) if forward => 0,
                (None, _) => children.len() - 1,
                (Some(k), Seek::Lt) => keys.partition_point(|x| x.as_slice() < k),
                (Some(k), _) => keys.partition_point(|x| x.as_slice() <= k),
            };
            if forward {
                for (n, c) in children.iter().enumerate().skip(start) {
                    let kk = if n == start { key } else { None };
                    if let Some(hit) = find(p, *c, kk, mode, depth + 1)? {
                        return Ok(Some(hit));
                    }
                }
            } else {
                for n in (0..=start).rev() {
                    let kk = if n == start { key } else { None };
                    if let Some(hit) = find(p, children[n], kk, mode, depth + 1)? {
                        return Ok(Some(hit));
                    }
                }
            }
            Ok(None)
        }
    }
}
