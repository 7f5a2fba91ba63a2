//! Per-stream state (one consumer, or one group's merged stream) and the per-query facts it
//! is fed with. Every buffer has a fixed size chosen at creation: see [`Tracker::heap_bytes`].

use super::harden::{argmax, margin};
use super::profile::{LANES, Model};
use super::rng::mix64;

/// Slots of the direct-mapped fingerprint table (8 KiB).
pub(crate) const FP_SLOTS: usize = 1024;
/// Recent exact-row hashes kept to recognise retries.
pub(crate) const DUP_RING: usize = 64;
/// Bits of the coverage bitmap (512 B).
pub(crate) const COVERAGE_BITS: usize = 4096;
/// Recent distinct rows (u8-quantised) kept for the near-duplicate distance check.
pub(crate) const RECENT: usize = 16;
/// A group query within `near_distance` of this many of the group's recent distinct rows is
/// a probe: members replaying the same data rarely send more than two variants of one row
/// within `RECENT` group queries; probes spread over keys send many (NES).
pub(crate) const GROUP_CLUSTER: usize = 3;
/// A query within this fraction of the last step from the row before last revisits it.
const REVISIT_FRACTION: f64 = 0.25;
/// Most fingerprint hashes kept per query.
pub(crate) const MAX_HASHES: usize = 32;
/// Most window hashes a query keeps before choosing the smallest (wider rows keep the
/// smallest this many as they go). Any size from [`MAX_HASHES`] up gives the same result:
/// this one holds every window of a 64-feature row and costs little to clear.
const MAX_WINDOWS: usize = 64;
const _: () = assert!(MAX_WINDOWS >= MAX_HASHES);
/// Widest row whose per-query scratch lives on the stack.
const STACK_FEATURES: usize = 1024;
/// Fingerprint sequence numbers are 24 bits.
const SEQ_MASK: u32 = 0x00FF_FFFF;

/// What one input row (with its output) looks like to every tracker. Computed once per row.
pub(crate) struct Query {
    /// Salted hash of the whole row (u16-quantised): equal for exact retries.
    pub exact: u64,
    /// The smallest salted window hashes.
    pub hashes: [u64; MAX_HASHES],
    pub n_hashes: usize,
    pub q8: Vec<u8>,
    pub q16: Vec<u16>,
    pub class: usize,
    pub ood: bool,
    pub low_margin: bool,
    pub cell: u32,
    /// The flagged consumer (owner key) whose recent query this row near-duplicates, from
    /// the global index (set by the detector before the row is ingested).
    pub linked: Option<u64>,
    /// The consumer's tracker found the row itself suspicious: probing (by its own signals
    /// or linked to a flagged consumer) or out of distribution (set by the detector after
    /// ingesting it).
    pub suspicious: bool,
    /// Suspicious without the link: what hardens an answer before the consumer is a
    /// suspect (a benign row near a flagged attacker's probes is not enough).
    pub suspicious_alone: bool,
}

impl Query {
    pub fn new(d: usize) -> Self {
        Query {
            exact: 0,
            hashes: [0; MAX_HASHES],
            n_hashes: 0,
            q8: vec![0; d],
            q16: vec![0; d],
            class: 0,
            ood: false,
            low_margin: false,
            cell: 0,
            linked: None,
            suspicious: false,
            suspicious_alone: false,
        }
    }

    /// Fills in the facts for `row` (d features) and `probs` (k probabilities).
    pub fn compute(&mut self, m: &Model, salt: u64, row: &[f32], probs: &[f32]) {
        let q = &m.q;
        let inv8 = 1.0 / m.u8_unit;
        let inv16 = 1.0 / m.u16_unit;
        // Fingerprint bins, with 8 bytes of zeros after the row so every window start can
        // read a whole word; on the stack for rows up to `STACK_FEATURES` wide.
        let mut stack = [0u8; STACK_FEATURES + 8];
        let mut heap = Vec::new();
        let padded: &mut [u8] = if m.d <= STACK_FEATURES {
            &mut stack[..m.d + 8]
        } else {
            heap.resize(m.d + 8, 0);
            &mut heap
        };
        for (((&x, q8), q16), bin) in row
            .iter()
            .zip(&mut self.q8)
            .zip(&mut self.q16)
            .zip(&mut padded[..m.d])
        {
            let v = x - m.min;
            *q8 = round_clamped(v * inv8, 255.0) as u8;
            *q16 = round_clamped(v * inv16, 65535.0) as u16;
            *bin = floor_clamped(v * m.inv_fingerprint_step, 255.0) as u8;
        }
        let exact = self.q16.iter().fold(salt ^ 0x5851_F42D_4C95_7F2D, |h, &v| {
            (h ^ u64::from(v)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        self.exact = mix64(exact);

        // Blacklight-style fingerprint: quantise, hash every sliding window with its
        // position and the salt, keep the smallest hashes.
        let w = q.fingerprint_window;
        let mut scratch = [0u64; MAX_WINDOWS];
        let mut len = 0;
        let padded: &[u8] = padded;
        let bins = &padded[..m.d];
        let word_mask = u64::MAX >> (8 * 8usize.saturating_sub(w));
        for (start, window) in bins.windows(w).enumerate() {
            let position = salt ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let h = if w <= 8 {
                // The window's bins fit one word: one mix per window, not a chain of
                // dependent multiplies per bin.
                let mut word = [0u8; 8];
                word.copy_from_slice(&padded[start..start + 8]);
                mix64(position ^ (u64::from_le_bytes(word) & word_mask))
            } else {
                mix64(window.iter().fold(position, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
                }))
            };
            if len < MAX_WINDOWS {
                scratch[len] = h;
                len += 1;
            } else if let Some(max) = scratch.iter_mut().max() {
                // More windows than the scratch holds: keep the smallest MAX_WINDOWS.
                if h < *max {
                    *max = h;
                }
            }
        }
        let all = &mut scratch[..len];
        let keep = q.fingerprint_hashes.min(MAX_HASHES).min(all.len());
        if keep > 0 && keep < all.len() {
            all.select_nth_unstable(keep - 1);
        }
        self.hashes[..keep].copy_from_slice(&all[..keep]);
        self.n_hashes = keep;

        // Out of distribution: farther than the thresholds from every class centroid, raw or
        // standardised. The scan stops at the block where both distances have come within
        // their thresholds (the answer cannot change after that): for in-distribution rows
        // usually the first, so only out-of-distribution rows pay for every centroid.
        let mut best_raw = f32::INFINITY;
        let mut best_std = f32::INFINITY;
        for (block, rows) in m.centroids.blocks() {
            let (mut raw, mut std) = ([0f32; LANES], [0f32; LANES]);
            for ((x, inv), mu) in row.iter().zip(&m.inv_scale).zip(block) {
                for l in 0..LANES {
                    let diff = x - mu[l];
                    raw[l] += diff * diff;
                    let z = diff * inv;
                    std[l] += z * z;
                }
            }
            for l in 0..rows {
                best_raw = best_raw.min(raw[l]);
                best_std = best_std.min(std[l]);
            }
            if best_raw.sqrt() <= q.ood_distance && best_std.sqrt() <= q.ood_standardized {
                break;
            }
        }
        self.ood = best_raw.sqrt() > q.ood_distance || best_std.sqrt() > q.ood_standardized;

        self.class = argmax(probs).min(m.k.saturating_sub(1));
        self.low_margin = margin(probs) < q.boundary_margin;

        // Coverage cell: sign pattern of random projections of the fingerprint-quantised row
        // (bin centres), so small noise rarely moves a row to another cell.
        let mut cell = 0u32;
        for (b, (block, rows)) in m.projection.blocks().enumerate() {
            let mut sums = [0f32; LANES];
            for (bin, proj) in bins.iter().zip(block) {
                let centre = m.bin_centre[usize::from(*bin)];
                for l in 0..LANES {
                    sums[l] += proj[l] * centre;
                }
            }
            for (l, s) in sums[..rows].iter().enumerate() {
                let j = b * LANES + l;
                if *s > m.projection_offset[j] {
                    cell |= 1 << j;
                }
            }
        }
        self.cell = cell;
    }
}

/// 2²³: adding it to a float in `[0, 2²²]` rounds that float to an integer (half to even),
/// and the sum's low mantissa bits are that integer.
const SHIFT: f32 = 8_388_608.0;

/// `x.round().clamp(0.0, max)` as an integer (`max` ≤ 2²²), with float arithmetic and a bit
/// cast only, so the quantising loop vectorises (a saturating `as` cast per lane does not).
/// Equal for every `x`: after clamping, adding [`SHIFT`] rounds half to even, and a tie left
/// below `x` goes up (halves away from zero, like [`f32::round`]). NaN gives 0, like `as`.
fn round_clamped(x: f32, max: f32) -> u32 {
    let x = x.max(0.0).min(max);
    let even = (x + SHIFT) - SHIFT;
    let rounded = even + if x - even >= 0.5 { 1.0 } else { 0.0 };
    (rounded + SHIFT).to_bits() - SHIFT.to_bits()
}

/// `x.floor().clamp(0.0, max)` as an integer (`max` ≤ 2²², equal for every `x`, as for
/// [`round_clamped`]).
fn floor_clamped(x: f32, max: f32) -> u32 {
    let x = x.max(0.0).min(max);
    let even = (x + SHIFT) - SHIFT;
    let floor = even - if even > x { 1.0 } else { 0.0 };
    (floor + SHIFT).to_bits() - SHIFT.to_bits()
}

/// What one query did to a tracker (calibration reads these; the detector ignores most).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub duplicate: bool,
    /// Most fingerprint hashes shared with one recent query.
    pub shared: usize,
    /// Distance to the nearest of the recent distinct rows (consumers).
    pub near: Option<f32>,
    /// Recent distinct rows within `near_distance` (groups).
    pub cluster: usize,
    /// |cos| between this step and the previous one.
    pub cos: Option<f32>,
    /// Sign-step structure relative to the nearest same-class prototype: the share of
    /// changed features that moved by the same magnitude (when enough features changed).
    pub step: Option<f32>,
    /// A probe by this stream's own signals (fingerprints, distance, line, step).
    pub probe: bool,
}

/// Raw signal values of one tracker (not yet divided by thresholds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Raw {
    pub probing: f32,
    pub distance: f32,
    pub ood: f32,
    pub coverage: f32,
    pub boundary: f32,
    pub volume: f32,
}

/// Which parts a tracker keeps: a group's merged stream skips the per-consumer
/// near-duplicate and PRADA state (members replaying the same data would look like
/// near-duplicates of each other); it counts near-duplicate clusters instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Consumer,
    Group,
}

/// Bounded per-stream state.
#[derive(Debug)]
pub(crate) struct Tracker {
    scope: Scope,
    /// Distinct (non-retry) queries; 24-bit sequence numbers in `fp` derive from it.
    seq: u32,
    /// Every query, retries included.
    pub queries: u64,
    volume: f32,
    volume_at: u64,
    /// Direct-mapped: (hash tag << 24) | seq. Empty for groups.
    fp: Vec<u64>,
    dups: [u64; DUP_RING],
    dup_head: usize,
    /// k × per_class × d prototype rows (u8-quantised). Empty for groups.
    protos: Vec<u8>,
    proto_len: Vec<u8>,
    proto_head: Vec<u8>,
    per_class: usize,
    /// Ring of the last `RECENT` distinct rows (u8-quantised).
    recent: Vec<u8>,
    recent_len: usize,
    recent_head: usize,
    /// Ring of log min-distances (PRADA).
    dist: Vec<f32>,
    dist_head: usize,
    dist_len: usize,
    /// The ring's values, sorted (what the normality test reads).
    sorted: Vec<f64>,
    /// The last two distinct rows (u16-quantised), most recent first.
    last: Vec<u16>,
    last_count: u8,
    coverage: [u64; COVERAGE_BITS / 64],
    coverage_count: u32,
    cusum_probe: f32,
    cusum_ood: f32,
    cusum_boundary: f32,
    distance_z: f32,
    /// One bit per sequence number (mod 256): the query was itself suspicious (probing or
    /// out of distribution). Only those are published to the global index.
    suspicious: [u64; 4],
}

impl Tracker {
    pub fn new(m: &Model, scope: Scope) -> Self {
        let consumer = scope == Scope::Consumer;
        let per_class = m.q.prototypes_per_class.min(255);
        Tracker {
            scope,
            seq: 0,
            queries: 0,
            volume: 0.0,
            volume_at: 0,
            fp: if consumer {
                vec![0; FP_SLOTS]
            } else {
                Vec::new()
            },
            dups: [0; DUP_RING],
            dup_head: 0,
            protos: if consumer {
                vec![0; m.k * per_class * m.d]
            } else {
                Vec::new()
            },
            proto_len: if consumer { vec![0; m.k] } else { Vec::new() },
            proto_head: if consumer { vec![0; m.k] } else { Vec::new() },
            per_class,
            recent: vec![0; RECENT * m.d],
            recent_len: 0,
            recent_head: 0,
            dist: if consumer {
                vec![0.0; m.q.distance_window]
            } else {
                Vec::new()
            },
            dist_head: 0,
            dist_len: 0,
            sorted: Vec::with_capacity(if consumer { m.q.distance_window } else { 0 }),
            last: vec![0; 2 * m.d],
            last_count: 0,
            coverage: [0; COVERAGE_BITS / 64],
            coverage_count: 0,
            cusum_probe: 0.0,
            cusum_ood: 0.0,
            cusum_boundary: 0.0,
            distance_z: 0.0,
            suspicious: [0; 4],
        }
    }

    /// Heap bytes held (fixed at creation).
    pub fn heap_bytes(&self) -> usize {
        self.fp.capacity() * 8
            + self.protos.capacity()
            + self.proto_len.capacity()
            + self.proto_head.capacity()
            + self.recent.capacity()
            + self.dist.capacity() * 4
            + self.sorted.capacity() * 8
            + self.last.capacity() * 2
    }

    /// Adds `n` queries to the decayed volume count at time `now` (unix seconds).
    pub fn add_volume(&mut self, n: usize, now: u64, half_life: u64) {
        if self.queries > 0 && now > self.volume_at && half_life > 0 {
            let dt = (now - self.volume_at) as f32 / half_life as f32;
            self.volume *= (-dt * std::f32::consts::LN_2).exp();
        }
        self.volume_at = self.volume_at.max(now);
        self.volume += n as f32;
    }

    /// Feeds one query. `linked`: the query near-duplicates a recent query of a flagged
    /// consumer (global index).
    pub fn ingest(&mut self, m: &Model, q: &Query, linked: bool) -> Outcome {
        self.queries += 1;
        let mut out = Outcome::default();
        if self.dups.contains(&q.exact) {
            out.duplicate = true;
            return out;
        }
        self.dups[self.dup_head] = q.exact;
        self.dup_head = (self.dup_head + 1) % DUP_RING;
        self.seq = (self.seq + 1) & SEQ_MASK;
        let p = &m.q;

        let (nearest, cluster) = self.nearest_recent(m, q);
        if self.scope == Scope::Consumer {
            out.shared = self.fingerprint(m, q);
            out.near = nearest;
            out.step = self.prada(m, q);
        } else {
            out.cluster = cluster;
        }
        out.cos = self.step_cosine(m.d, &q.q16);
        let near_fp = out.shared >= p.fingerprint_match;
        let clustered = self.scope == Scope::Group && cluster >= GROUP_CLUSTER;
        let near_d = out.near.is_some_and(|d| d <= p.near_distance) || clustered;
        let step = out.step.is_some_and(|s| s >= p.step_fraction);
        let line = out.cos.is_some_and(|c| c >= p.line_cosine);
        out.probe = near_fp || near_d || line || step;
        let probe = out.probe || linked;
        self.cusum_probe = cusum(self.cusum_probe, probe, p.probing_drift);
        let bit = (self.seq % 256) as usize;
        if probe || q.ood {
            self.suspicious[bit / 64] |= 1 << (bit % 64);
        } else {
            self.suspicious[bit / 64] &= !(1 << (bit % 64));
        }
        self.cusum_ood = cusum(self.cusum_ood, q.ood, p.ood_drift);
        self.cusum_boundary = cusum(self.cusum_boundary, q.low_margin, p.boundary_drift);

        let bit = (q.cell as usize) % COVERAGE_BITS;
        let word = &mut self.coverage[bit / 64];
        if *word & (1 << (bit % 64)) == 0 {
            *word |= 1 << (bit % 64);
            self.coverage_count += 1;
        }

        let d = m.d;
        self.last.copy_within(0..d, d);
        self.last[..d].copy_from_slice(&q.q16);
        self.last_count = (self.last_count + 1).min(2);
        out
    }

    /// Looks the query's hashes up in the recent-fingerprint table, then records them.
    /// Returns the most hashes shared with a single recent query.
    fn fingerprint(&mut self, m: &Model, q: &Query) -> usize {
        let mut seqs = [0u32; MAX_HASHES];
        let mut n = 0;
        for &h in &q.hashes[..q.n_hashes] {
            let slot = (h as usize) & (FP_SLOTS - 1);
            let tag = h >> 24;
            let e = self.fp[slot];
            if e != 0 && e >> 24 == tag {
                let s = (e as u32) & SEQ_MASK;
                let age = self.seq.wrapping_sub(s) & SEQ_MASK;
                if age >= 1 && age <= m.q.history {
                    seqs[n] = s;
                    n += 1;
                }
            }
            self.fp[slot] = (tag << 24) | u64::from(self.seq);
        }
        let seqs = &mut seqs[..n];
        seqs.sort_unstable();
        let mut best = 0;
        let mut run = 0;
        for i in 0..seqs.len() {
            run = if i > 0 && seqs[i] == seqs[i - 1] {
                run + 1
            } else {
                1
            };
            best = best.max(run);
        }
        best
    }

    /// Distance to the nearest recent distinct row and how many are within
    /// `near_distance`; records this row.
    fn nearest_recent(&mut self, m: &Model, q: &Query) -> (Option<f32>, usize) {
        let d = m.d;
        let near = m.q.near_distance / m.u8_unit;
        let near_sq = (near * near) as u32;
        let (mut best, mut within) = (None, 0);
        for r in self.recent[..self.recent_len * d].chunks_exact(d) {
            let s = sq_dist_u8(r, &q.q8);
            best = Some(best.map_or(s, |b: u32| b.min(s)));
            within += usize::from(s <= near_sq);
        }
        let at = self.recent_head * d;
        self.recent[at..at + d].copy_from_slice(&q.q8);
        self.recent_head = (self.recent_head + 1) % RECENT;
        self.recent_len = (self.recent_len + 1).min(RECENT);
        (best.map(|b| (b as f32).sqrt() * m.u8_unit), within)
    }

    /// PRADA: distance to the nearest prototype of the predicted class; grows the class's
    /// prototype ring and the distance window; recomputes the normality statistic. Returns
    /// the sign-step share relative to that prototype.
    fn prada(&mut self, m: &Model, q: &Query) -> Option<f32> {
        let (d, c, per) = (m.d, q.class, self.per_class);
        let base = c * per * d;
        let len = usize::from(self.proto_len[c]);
        if len == 0 {
            self.add_prototype(m, q);
            return None;
        }
        let mut best = u32::MAX;
        let mut nearest = 0;
        for (i, proto) in self.protos[base..base + len * d]
            .chunks_exact(d)
            .enumerate()
        {
            let s = sq_dist_u8(proto, &q.q8);
            if s < best {
                best = s;
                nearest = i;
            }
        }
        let step = sign_step_share(
            &self.protos[base + nearest * d..base + (nearest + 1) * d],
            &q.q8,
        );
        let dist = (best as f32).sqrt() * m.u8_unit;
        let unit = m.u8_unit * 16.0;
        let logd = (dist + unit).ln();

        let (mean, sd) = self.window_stats();
        self.push_distance(logd);
        if self.dist_len < 2 || logd > mean - sd {
            self.add_prototype(m, q);
        }
        if let Some(Some(coef)) = m.sw.get(self.dist_len) {
            self.distance_z = coef
                .test_sorted(&self.sorted)
                .map_or(0.0, |r| (r.z.max(0.0) as f32).min(50.0));
        }
        step
    }

    /// Adds `logd` to the distance ring (dropping the oldest when full) and to its sorted
    /// copy.
    fn push_distance(&mut self, logd: f32) {
        let find = |sorted: &[f64], v: f64| sorted.binary_search_by(|s| s.total_cmp(&v));
        let wl = self.dist.len();
        if self.dist_len == wl
            && let Ok(at) = find(&self.sorted, f64::from(self.dist[self.dist_head]))
        {
            self.sorted.remove(at);
        }
        self.dist[self.dist_head] = logd;
        self.dist_head = (self.dist_head + 1) % wl;
        self.dist_len = (self.dist_len + 1).min(wl);
        let new = f64::from(logd);
        let (Ok(at) | Err(at)) = find(&self.sorted, new);
        self.sorted.insert(at, new);
    }

    fn window_stats(&self) -> (f32, f32) {
        let n = self.dist_len;
        if n == 0 {
            return (0.0, 0.0);
        }
        let vals = &self.dist[..n.min(self.dist.len())];
        let mean = vals.iter().sum::<f32>() / n as f32;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        (mean, var.sqrt())
    }

    fn add_prototype(&mut self, m: &Model, q: &Query) {
        let (d, c, per) = (m.d, q.class, self.per_class);
        let head = usize::from(self.proto_head[c]);
        let at = (c * per + head) * d;
        self.protos[at..at + d].copy_from_slice(&q.q8);
        self.proto_head[c] = ((head + 1) % per) as u8;
        self.proto_len[c] = (usize::from(self.proto_len[c]) + 1).min(per) as u8;
    }

    /// |cos| of the angle between (last − previous) and (query − last). `None` when the
    /// query returns to (near) the previous row: A, B, A′ is a revisit, not a line step
    /// (members of a group replaying the same rows produce it; a bisection step never comes
    /// back closer than half its previous step).
    fn step_cosine(&self, d: usize, q16: &[u16]) -> Option<f32> {
        if self.last_count < 2 {
            return None;
        }
        let (last, prev) = self.last.split_at(d);
        let (mut dot, mut n1, mut n2, mut back) = (0f64, 0f64, 0f64, 0f64);
        for ((&a, &b), &c) in prev.iter().zip(last).zip(q16) {
            let s1 = f64::from(b) - f64::from(a);
            let s2 = f64::from(c) - f64::from(b);
            let r = f64::from(c) - f64::from(a);
            dot += s1 * s2;
            n1 += s1 * s1;
            n2 += s2 * s2;
            back += r * r;
        }
        if n1 == 0.0 || n2 == 0.0 || back < REVISIT_FRACTION * REVISIT_FRACTION * n1 {
            return None;
        }
        Some((dot.abs() / (n1.sqrt() * n2.sqrt())) as f32)
    }

    /// Raw signal values now.
    pub fn raw(&self) -> Raw {
        Raw {
            probing: self.cusum_probe,
            distance: self.distance_z,
            ood: self.cusum_ood,
            coverage: self.coverage_count as f32,
            boundary: self.cusum_boundary,
            volume: self.volume,
        }
    }

    /// Fingerprint keys of the recent queries that were themselves suspicious (probing or
    /// out of distribution), for the global index: a flagged consumer's natural-looking
    /// queries are not published, so benign consumers replaying the same data are not linked.
    pub fn recent_keys(&self, history: u32) -> impl Iterator<Item = u64> + '_ {
        let history = history.min(256);
        self.fp.iter().enumerate().filter_map(move |(slot, &e)| {
            let seq = (e as u32) & SEQ_MASK;
            let age = self.seq.wrapping_sub(seq) & SEQ_MASK;
            let bit = (seq % 256) as usize;
            let suspicious = self.suspicious[bit / 64] & (1 << (bit % 64)) != 0;
            (e != 0 && age < history && suspicious).then(|| global_key_parts(e >> 24, slot))
        })
    }
}

/// The global index key of a hash: its 40-bit tag and its 10 slot bits.
pub(crate) fn global_key(h: u64) -> u64 {
    global_key_parts(h >> 24, (h as usize) & (FP_SLOTS - 1))
}

fn global_key_parts(tag: u64, slot: usize) -> u64 {
    (tag << 10) | slot as u64
}

/// Among features that changed between `a` and `b` (u8 units), the share whose change has
/// the most common magnitude (±1 unit). `None` when fewer than a quarter of the features
/// changed: a sign-gradient step (x ± λ) moves most features by the same amount.
fn sign_step_share(a: &[u8], b: &[u8]) -> Option<f32> {
    let mut hist = [0u16; 256];
    let (mut changed, mut lo, mut hi) = (0usize, 255usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        let t = x.abs_diff(*y);
        if t > 1 {
            hist[usize::from(t)] += 1;
            changed += 1;
            lo = lo.min(usize::from(t));
            hi = hi.max(usize::from(t));
        }
    }
    if changed == 0 || changed * 4 < a.len() {
        return None;
    }
    // Windows of three magnitudes that hold any change: those starting in lo−2..=hi.
    let (first, last) = (lo.saturating_sub(2).max(1), hi.min(253));
    let best = hist[first..=last]
        .iter()
        .zip(&hist[first + 1..])
        .zip(&hist[first + 2..])
        .map(|((x, y), z)| u32::from(*x) + u32::from(*y) + u32::from(*z))
        .max()
        .unwrap_or(0);
    Some(best as f32 / changed as f32)
}

/// Squared Euclidean distance of two u8 rows (modulo 2³², far beyond any row width used),
/// 16 bytes at a time: per byte `|a - b|` (two saturating subtractions), widened to 16 bits,
/// squared and summed in pairs by SSE2's `pmaddwd`.
#[cfg(target_feature = "sse2")]
fn sq_dist_u8(a: &[u8], b: &[u8]) -> u32 {
    use safe_arch::{
        add_i32_m128i, load_unaligned_m128i, mul_i16_horizontal_add_m128i, sub_saturating_u8_m128i,
        unpack_high_i8_m128i, unpack_low_i8_m128i, zeroed_m128i,
    };
    let ((a16, a_tail), (b16, b_tail)) = (a.as_chunks::<16>(), b.as_chunks::<16>());
    let tail = plain_sq_dist_u8(a_tail, b_tail);
    let zero = zeroed_m128i();
    let mut acc = zero;
    for (x, y) in a16.iter().zip(b16) {
        let (x, y) = (load_unaligned_m128i(x), load_unaligned_m128i(y));
        let diff = sub_saturating_u8_m128i(x, y) | sub_saturating_u8_m128i(y, x);
        let (low, high) = (
            unpack_low_i8_m128i(diff, zero),
            unpack_high_i8_m128i(diff, zero),
        );
        let squares = add_i32_m128i(
            mul_i16_horizontal_add_m128i(low, low),
            mul_i16_horizontal_add_m128i(high, high),
        );
        acc = add_i32_m128i(acc, squares);
    }
    <[u32; 4]>::from(acc)
        .into_iter()
        .fold(tail, u32::wrapping_add)
}

/// Squared Euclidean distance of two u8 rows (no SSE2: what the compiler makes of it).
#[cfg(not(target_feature = "sse2"))]
fn sq_dist_u8(a: &[u8], b: &[u8]) -> u32 {
    plain_sq_dist_u8(a, b)
}

fn plain_sq_dist_u8(a: &[u8], b: &[u8]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u32::from(x.abs_diff(*y)).pow(2))
        .fold(0, u32::wrapping_add)
}

fn cusum(s: f32, hit: bool, drift: f32) -> f32 {
    (s + if hit { 1.0 } else { 0.0 } - drift).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extraction::rng::SplitMix64;
    use crate::extraction::testkit;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quantising_equals_round_and_floor(bits in any::<u32>(), scale in -300.0f32..70_000.0) {
            for x in [f32::from_bits(bits), scale, scale.trunc() + 0.5, scale.trunc() - 0.5] {
                for max in [255.0f32, 65535.0] {
                    prop_assert_eq!(round_clamped(x, max), x.round().clamp(0.0, max) as u32, "{}", x);
                    prop_assert_eq!(floor_clamped(x, max), x.floor().clamp(0.0, max) as u32, "{}", x);
                }
            }
        }

        #[test]
        fn squared_distance_equals_the_plain_sum(pairs in prop::collection::vec(any::<(u8, u8)>(), 0..80)) {
            let (a, b): (Vec<u8>, Vec<u8>) = pairs.into_iter().unzip();
            let plain: u32 = a.iter().zip(&b).map(|(x, y)| u32::from(x.abs_diff(*y)).pow(2)).sum();
            prop_assert_eq!(sq_dist_u8(&a, &b), plain);
            prop_assert_eq!(plain_sq_dist_u8(&a, &b), plain);
            // The widest differences, in both directions.
            let (max, min) = (vec![255u8; a.len()], vec![0u8; a.len()]);
            prop_assert_eq!(sq_dist_u8(&max, &min), 65_025 * a.len() as u32);
            prop_assert_eq!(sq_dist_u8(&min, &max), 65_025 * a.len() as u32);
        }

        /// The scan bounded to the magnitudes that occur gives the full scan's share.
        #[test]
        fn sign_step_share_equals_the_full_scan(
            a in prop::collection::vec(any::<u8>(), 1..80),
            steps in prop::collection::vec(prop_oneof![-3i16..=3, any::<u8>().prop_map(i16::from)], 80),
        ) {
            let b: Vec<u8> = a.iter().zip(&steps).map(|(x, s)| (i16::from(*x) + s).clamp(0, 255) as u8).collect();
            let mut hist = [0u32; 256];
            let mut changed = 0;
            for (x, y) in a.iter().zip(&b) {
                let t = x.abs_diff(*y);
                if t > 1 {
                    hist[usize::from(t)] += 1;
                    changed += 1;
                }
            }
            let full = (changed > 0 && changed * 4 >= a.len()).then(|| {
                let best = (1..254).map(|i| hist[i] + hist[i + 1] + hist[i + 2]).max().unwrap_or(0);
                best as f32 / changed as f32
            });
            prop_assert_eq!(sign_step_share(&a, &b), full);
        }
    }

    /// Ties (which rounding half to even would send down), values just below a tie, the
    /// bounds and what lies beyond them.
    #[test]
    fn quantising_edges() {
        for x in [
            0.49999997f32,
            0.5,
            1.5,
            2.5,
            3.5,
            254.5,
            254.49998,
            254.99998,
            255.5,
            65534.5,
            65535.5,
            -0.5,
            -0.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            for max in [255.0f32, 65535.0] {
                let clamped = |v: f32| v.clamp(0.0, max) as u32;
                assert_eq!(round_clamped(x, max), clamped(x.round()), "{x} {max}");
                assert_eq!(floor_clamped(x, max), clamped(x.floor()), "{x} {max}");
            }
        }
        assert_eq!(round_clamped(f32::NAN, 255.0), 0);
        assert_eq!(floor_clamped(f32::NAN, 255.0), 0);
    }

    /// The fingerprint keeps the smallest salted hashes of every window, each hash taken
    /// over the window's bins packed into a word (windows up to 8) or chained (wider), for
    /// rows on the stack scratch and wider ones on the heap.
    #[test]
    fn fingerprints_are_the_smallest_window_hashes() {
        let shipped = testkit::shipped_profile();
        let mut rng = SplitMix64::new(11);
        for (d, w) in [
            (64, 6),
            (64, 8),
            (64, 12),
            (STACK_FEATURES + 76, 6),
            (STACK_FEATURES + 76, 12),
        ] {
            let mut p = shipped.clone();
            let widen = |v: &[f32]| (0..d).map(|i| v[i % v.len()]).collect::<Vec<f32>>();
            p.features = d;
            p.feature_mean = widen(&shipped.feature_mean);
            p.feature_scale = widen(&shipped.feature_scale);
            p.centroids = shipped.centroids.iter().map(|c| widen(c)).collect();
            p.query.fingerprint_window = w;
            let m = Model::new(&p).unwrap();
            let row: Vec<f32> = (0..d).map(|_| (rng.next_f64() * 16.0) as f32).collect();
            let mut q = Query::new(d);
            q.compute(&m, 77, &row, &vec![0.1; m.k]);

            let bins: Vec<u8> = row
                .iter()
                .map(|x| floor_clamped((x - m.min) * m.inv_fingerprint_step, 255.0) as u8)
                .collect();
            let mut want: Vec<u64> = bins
                .windows(w)
                .enumerate()
                .map(|(start, window)| {
                    let position = 77 ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    if w <= 8 {
                        let mut word = [0u8; 8];
                        word[..w].copy_from_slice(window);
                        mix64(position ^ u64::from_le_bytes(word))
                    } else {
                        mix64(window.iter().fold(position, |h, &b| {
                            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
                        }))
                    }
                })
                .collect();
            want.sort_unstable();
            want.truncate(m.q.fingerprint_hashes.min(MAX_HASHES));
            let mut got = q.hashes[..q.n_hashes].to_vec();
            got.sort_unstable();
            assert_eq!(got, want, "d {d}, window {w}");
        }
    }

    /// The feature-major centroid and projection sums give the row-by-row loop's facts.
    #[test]
    fn query_facts_equal_the_row_by_row_computation() {
        let profile = testkit::shipped_profile();
        let m = Model::new(&profile).unwrap();
        let mut rng = SplitMix64::new(3);
        let mut q = Query::new(m.d);
        let (rows, _) = testkit::holdout();
        let mut seen_ood = [false; 2];
        for i in 0..300 {
            // Held-out rows, noisier ones and random ones: both sides of the OOD thresholds.
            let noise = [0.0, 2.0, 20.0][i % 3];
            let row: Vec<f32> = rows[i]
                .iter()
                .map(|x| x + ((rng.next_f64() - 0.5) * noise) as f32)
                .collect();
            let probs = vec![0.1; m.k];
            q.compute(&m, 9, &row, &probs);
            let (mut best_raw, mut best_std) = (f32::INFINITY, f32::INFINITY);
            for c in &profile.centroids {
                let (mut raw, mut std) = (0f32, 0f32);
                for ((x, mu), inv) in row.iter().zip(c).zip(&m.inv_scale) {
                    let diff = x - mu;
                    raw += diff * diff;
                    std += (diff * inv) * (diff * inv);
                }
                best_raw = best_raw.min(raw);
                best_std = best_std.min(std);
            }
            let ood = best_raw.sqrt() > m.q.ood_distance || best_std.sqrt() > m.q.ood_standardized;
            assert_eq!(q.ood, ood);
            seen_ood[usize::from(ood)] = true;
            let step = m.q.fingerprint_step;
            let centres: Vec<f32> = row
                .iter()
                .map(|x| {
                    let bin = ((x - m.min) / step).floor().clamp(0.0, 255.0);
                    m.min + (bin + 0.5) * step
                })
                .collect();
            let mut cell = 0u32;
            let mut seed = SplitMix64::new(profile.query.projection_seed);
            for j in 0..profile.query.projections {
                let proj: Vec<f32> = m
                    .inv_scale
                    .iter()
                    .map(|inv| seed.normal() as f32 * inv)
                    .collect();
                let offset: f32 = proj
                    .iter()
                    .zip(&profile.feature_mean)
                    .map(|(a, b)| a * b)
                    .sum();
                let s: f32 = proj.iter().zip(&centres).map(|(a, c)| a * c).sum();
                if s > offset {
                    cell |= 1 << j;
                }
            }
            assert_eq!(q.cell, cell);
        }
        assert_eq!(seen_ood, [true, true]);
    }

    /// The sorted copy of the distance window always holds exactly the window's values.
    #[test]
    fn sorted_window_follows_the_ring() {
        let m = Model::new(&testkit::shipped_profile()).unwrap();
        let mut t = Tracker::new(&m, Scope::Consumer);
        let mut rng = SplitMix64::new(5);
        for i in 0..3 * m.q.distance_window {
            // Repeats included: equal values must leave one at a time.
            let v = (rng.below(40) as f32) * 0.25;
            t.push_distance(v);
            let mut ring: Vec<f64> = t.dist[..t.dist_len].iter().map(|v| f64::from(*v)).collect();
            ring.sort_unstable_by(f64::total_cmp);
            assert_eq!(t.sorted, ring, "after {} pushes", i + 1);
        }
        assert_eq!(t.sorted.len(), m.q.distance_window);
    }
}
