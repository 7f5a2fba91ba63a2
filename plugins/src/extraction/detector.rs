//! The streaming detector: per-consumer and per-group state, the response ladder, the
//! global fingerprint index, and the admin view (suspects, clear).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;

use super::ExtractionError;
use super::harden::{OutputPolicy, harden_outputs};
use super::profile::{Ladder, Model, Profile, SignalThresholds};
use super::rng::mix64;
use super::tracker::{Query, Raw, Scope, Tracker, global_key};
use crate::auth::caller::Caller;
use crate::verdict::{Code, Denial};

/// Who is querying. Only an authenticated [`Caller`] makes one, so unauthenticated traffic
/// can never create detector state.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    consumer: &'a str,
    group: Option<&'a str>,
    trusted: bool,
}

impl<'a> Identity<'a> {
    /// The caller's consumer and group; not trusted.
    pub fn of(caller: &'a Caller) -> Self {
        Identity {
            consumer: &caller.consumer,
            group: caller.group.as_deref(),
            trusted: false,
        }
    }

    /// Marks the consumer trusted (from configuration): its outputs are not hardened by
    /// default. Detection still runs and a suspect is hardened like anyone else.
    pub fn trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    pub fn consumer(&self) -> &'a str {
        self.consumer
    }

    pub fn group(&self) -> Option<&'a str> {
        self.group
    }
}

impl<'a> From<&'a Caller> for Identity<'a> {
    fn from(caller: &'a Caller) -> Self {
        Identity::of(caller)
    }
}

/// The response ladder, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do (outputs still get the default hardening unless trusted).
    #[default]
    None,
    /// Write an audit record and count a metric; the response is unchanged.
    Observe,
    /// Return hardened outputs ([`DetectorOptions::suspect_output`]).
    Harden,
    /// Hardened outputs and the consumer's rate cut to [`DetectorOptions::throttle_factor`].
    Throttle,
    /// Refuse with 403 `extraction_suspected` until an operator clears it or the block ends.
    Block,
}

impl Action {
    /// Stable lower-case name (logs, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Observe => "observe",
            Action::Harden => "harden",
            Action::Throttle => "throttle",
            Action::Block => "block",
        }
    }

    fn from_score(score: f32, ladder: &Ladder) -> Action {
        if score >= ladder.block {
            Action::Block
        } else if score >= ladder.throttle {
            Action::Throttle
        } else if score >= ladder.harden {
            Action::Harden
        } else if score >= ladder.observe {
            Action::Observe
        } else {
            Action::None
        }
    }
}

/// The detector's signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Probing,
    Distance,
    Ood,
    Coverage,
    Boundary,
    Volume,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 6] = [
        Signal::Probing,
        Signal::Distance,
        Signal::Ood,
        Signal::Coverage,
        Signal::Boundary,
        Signal::Volume,
    ];

    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Probing => "probing",
            Signal::Distance => "distance",
            Signal::Ood => "ood",
            Signal::Coverage => "coverage",
            Signal::Boundary => "boundary",
            Signal::Volume => "volume",
        }
    }
}

/// One score per signal: raw value / calibrated threshold (1.0 = at the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct SignalScores {
    pub probing: f32,
    pub distance: f32,
    pub ood: f32,
    /// Capped at 1.0: coverage alone never goes beyond hardening.
    pub coverage: f32,
    pub boundary: f32,
    /// Capped at 1.0: volume alone never goes beyond hardening.
    pub volume: f32,
}

impl SignalScores {
    /// The score of one signal.
    pub fn get(&self, s: Signal) -> f32 {
        match s {
            Signal::Probing => self.probing,
            Signal::Distance => self.distance,
            Signal::Ood => self.ood,
            Signal::Coverage => self.coverage,
            Signal::Boundary => self.boundary,
            Signal::Volume => self.volume,
        }
    }

    /// The strongest signal and its score.
    pub fn top(&self) -> (Signal, f32) {
        Signal::ALL.iter().map(|s| (*s, self.get(*s))).fold(
            (Signal::Probing, f32::NEG_INFINITY),
            |a, b| {
                if b.1 > a.1 { b } else { a }
            },
        )
    }

    /// Combined score: the strongest signal plus a quarter of every other signal's excess
    /// over 0.5 (corroboration).
    pub fn combined(&self) -> f32 {
        let (top, max) = self.top();
        let extra: f32 = Signal::ALL
            .iter()
            .filter(|s| **s != top)
            .map(|s| (self.get(*s) - 0.5).max(0.0))
            .sum();
        max.max(0.0) + 0.25 * extra
    }

    fn from_raw(raw: &Raw, t: &SignalThresholds) -> Self {
        SignalScores {
            probing: raw.probing / t.probing,
            distance: raw.distance / t.distance,
            ood: raw.ood / t.ood,
            coverage: (raw.coverage / t.coverage).min(1.0),
            boundary: raw.boundary / t.boundary,
            volume: (raw.volume / t.volume).min(1.0),
        }
    }

    /// Group scores: only the signals that aggregate over members (see the module docs).
    fn group(raw: &Raw, t: &SignalThresholds) -> Self {
        let mut s = Self::from_raw(raw, t);
        s.distance = 0.0;
        s.volume = 0.0;
        s
    }
}

/// What the detector concluded after one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The consumer's own scores.
    pub scores: SignalScores,
    /// The consumer's combined score.
    pub combined: f32,
    /// Queries (rows) seen from this consumer, retries included.
    pub queries_seen: u64,
    /// What to do: the strongest of the consumer's and its group's actions, including
    /// actions still held from earlier requests.
    pub action: Action,
    /// How to return this response's probabilities.
    pub output: OutputPolicy,
    /// Multiply the consumer's rate limit by this (`Some` at [`Action::Throttle`]).
    pub throttle_factor: Option<f32>,
    /// Until when a block lasts (`Some` at [`Action::Block`]).
    pub retry_after: Option<Duration>,
    /// The strongest signal when the action is above [`Action::None`].
    pub reason: Option<Signal>,
    /// A flagged consumer whose recent queries this consumer's queries near-duplicate.
    pub linked_to: Option<String>,
    /// The group's view, when the identity has a group.
    pub group: Option<GroupAssessment>,
    /// The consumer's or its group's action differs from the one at its previous
    /// assessment: worth an audit record (a suspect's every request is not).
    pub changed: bool,
    /// Rows (indices in the request) whose answers get the suspect output on their own:
    /// each was itself suspicious (probing by the consumer's own signals, or out of
    /// distribution) while the consumer is not (yet) at [`Action::Harden`]. Only when
    /// `output` hardens (untrusted consumers); the request's other rows follow `output`.
    /// Apply both with [`Detector::harden_assessed`].
    pub hardened_rows: Vec<usize>,
}

/// A group's merged-stream view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupAssessment {
    pub name: String,
    pub scores: SignalScores,
    pub combined: f32,
    pub queries_seen: u64,
    pub action: Action,
}

/// Whether a suspect is a consumer or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspectKind {
    Consumer,
    Group,
}

/// One entry of `GET /admin/suspects`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuspectReport {
    /// `consumer:<name>` or `group:<name>`: what [`Detector::clear`] takes.
    pub id: String,
    pub kind: SuspectKind,
    pub name: String,
    /// The consumer's group (consumers only).
    pub group: Option<String>,
    /// The action in force now.
    pub action: Action,
    pub combined: f32,
    pub scores: SignalScores,
    pub reason: Option<Signal>,
    pub queries_seen: u64,
    /// Unix seconds.
    pub first_flagged: u64,
    pub last_seen: u64,
    /// Unix seconds at which the held action lapses (unless renewed).
    pub until: u64,
    pub linked_to: Option<String>,
}

/// Runtime knobs (not calibrated): policies, hold times, bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// Outputs of untrusted consumers when nothing is suspected.
    pub default_output: OutputPolicy,
    /// Outputs at [`Action::Harden`] and above (trusted or not).
    pub suspect_output: OutputPolicy,
    /// Rate multiplier at [`Action::Throttle`].
    pub throttle_factor: f32,
    /// How long Observe/Harden/Throttle stay in force after the score last reached them.
    pub hold_secs: u64,
    /// How long a block lasts unless an operator clears it.
    pub block_secs: u64,
    /// State of a consumer or group idle this long is dropped (held blocks are kept).
    pub idle_secs: u64,
    /// Most consumers / groups tracked at once; beyond, the least recently seen unflagged
    /// entry is evicted.
    pub max_consumers: usize,
    pub max_groups: usize,
    /// Half-life of the volume count.
    pub volume_half_life_secs: u64,
    /// Global fingerprint index: slots and entry lifetime.
    pub global_slots: usize,
    pub global_ttl_secs: u64,
    /// Idle sweeps run at most this often (from `observe`).
    pub sweep_every_secs: u64,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            default_output: OutputPolicy::Dither { decimals: 2 },
            suspect_output: OutputPolicy::TopLabel,
            throttle_factor: 0.1,
            hold_secs: 900,
            block_secs: 3600,
            idle_secs: 1800,
            max_consumers: 100_000,
            max_groups: 10_000,
            volume_half_life_secs: 86_400,
            global_slots: 1 << 16,
            global_ttl_secs: 3600,
            sweep_every_secs: 60,
        }
    }
}

struct Entry {
    tracker: Tracker,
    /// Held action and when it lapses.
    held: Action,
    held_until: u64,
    first_flagged: u64,
    last_seen: u64,
    scores: SignalScores,
    combined: f32,
    group: Option<String>,
    linked_to: Option<String>,
    /// Fingerprints already copied to the global index.
    published: bool,
    /// The action in force at the last assessment.
    reported: Action,
}

impl Entry {
    fn new(tracker: Tracker, now: u64) -> Self {
        Entry {
            tracker,
            held: Action::None,
            held_until: 0,
            first_flagged: 0,
            last_seen: now,
            scores: SignalScores::default(),
            combined: 0.0,
            group: None,
            linked_to: None,
            published: false,
            reported: Action::None,
        }
    }

    /// A block that has lapsed gives the stream a fresh start: its evidence is dropped, so
    /// the block's end means something (a continuing attack re-accumulates quickly).
    fn lapse_block(&mut self, m: &Model, scope: Scope, now: u64) {
        if self.held == Action::Block && now >= self.held_until {
            self.tracker = Tracker::new(m, scope);
            self.held = Action::None;
            self.published = false;
        }
    }

    fn held_action(&self, now: u64) -> Action {
        if now < self.held_until {
            self.held
        } else {
            Action::None
        }
    }

    /// Applies a freshly computed action to the held one and returns the action in force.
    fn escalate(&mut self, computed: Action, now: u64, o: &DetectorOptions) -> Action {
        let held = self.held_action(now);
        if computed >= Action::Observe && computed >= held {
            let hold = if computed == Action::Block {
                o.block_secs
            } else {
                o.hold_secs
            };
            if computed > held || self.held_until < now + hold {
                // A block is not extended by further queries: it lasts block_secs.
                if !(computed == Action::Block && held == Action::Block) {
                    self.held_until = now + hold;
                }
            }
            if self.first_flagged == 0 || held == Action::None {
                self.first_flagged = now;
            }
            self.held = computed;
        }
        computed.max(self.held_action(now))
    }
}

/// Streaming model-extraction detector for one model (one [`Profile`]). Thread-safe; share
/// it behind an `Arc`. See the module docs for the signals.
pub struct Detector {
    profile: Profile,
    model: Model,
    options: DetectorOptions,
    salt: u64,
    consumers: DashMap<String, Entry>,
    groups: DashMap<String, Entry>,
    global: GlobalIndex,
    /// Owner hash → consumer name, for consumers that published to the global index.
    flagged_names: DashMap<u64, String>,
    last_sweep: AtomicU64,
}

impl Detector {
    /// A detector with a random salt from the OS (attackers cannot predict fingerprints).
    pub fn new(profile: Profile, options: DetectorOptions) -> Result<Self, ExtractionError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| ExtractionError::Profile(format!("no randomness for the salt: {e}")))?;
        Self::with_salt(profile, options, u64::from_le_bytes(bytes))
    }

    /// A detector with a fixed salt (tests, benchmarks, calibration).
    pub fn with_salt(
        profile: Profile,
        options: DetectorOptions,
        salt: u64,
    ) -> Result<Self, ExtractionError> {
        let model = Model::new(&profile)?;
        let global = GlobalIndex::new(options.global_slots);
        Ok(Detector {
            profile,
            model,
            options,
            salt,
            consumers: DashMap::new(),
            groups: DashMap::new(),
            global,
            flagged_names: DashMap::new(),
            last_sweep: AtomicU64::new(0),
        })
    }

    /// The profile in use.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The options in use.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Hardens `probabilities` (the answers to `rows`, n × d features) in place per
    /// `policy`, with dither keys from this detector's secret salt and each row's bytes.
    pub fn harden(&self, rows: &[f32], probabilities: &mut [f32], policy: OutputPolicy) {
        let keys: Vec<u64> = if matches!(policy, OutputPolicy::Dither { .. }) {
            rows.chunks(self.model.d.max(1))
                .map(|row| dither_key(self.salt, row))
                .collect()
        } else {
            Vec::new()
        };
        harden_outputs(probabilities, self.model.k, policy, &keys);
    }

    /// Feeds one request: `rows` is n × d validated input features (row-major), `outputs`
    /// the model's n × k probabilities; each row counts as one query. `now` is unix seconds.
    ///
    /// Fails (without changing any state) when the shapes do not match the profile or a
    /// value is not finite.
    pub fn observe(
        &self,
        who: &Identity<'_>,
        rows: &[f32],
        outputs: &[f32],
        now: u64,
    ) -> Result<Assessment, ExtractionError> {
        let (d, k) = (self.model.d, self.model.k);
        if rows.is_empty() || !rows.len().is_multiple_of(d) || outputs.len() != rows.len() / d * k {
            return Err(ExtractionError::Shape {
                features: d,
                classes: k,
                inputs: rows.len(),
                outputs: outputs.len(),
            });
        }
        if rows.iter().chain(outputs).any(|v| !v.is_finite()) {
            return Err(ExtractionError::NotFinite);
        }
        self.maybe_sweep(now);
        let n = rows.len() / d;
        let mut queries: Vec<Query> = Vec::with_capacity(n);
        for (row, probs) in rows.chunks_exact(d).zip(outputs.chunks_exact(k)) {
            let mut q = Query::new(d);
            q.compute(&self.model, self.salt, row, probs);
            queries.push(q);
        }
        let owner = self.owner(who.consumer);
        for q in &mut queries {
            q.linked = self
                .global
                .linked(q, owner, now, &self.model, &self.options);
        }

        // The consumer's own stream.
        let mut entry = match self.consumers.get_mut(who.consumer) {
            Some(entry) => entry,
            None => {
                self.make_room(true, now);
                self.consumers
                    .entry(who.consumer.to_string())
                    .or_insert_with(|| Entry::new(Tracker::new(&self.model, Scope::Consumer), now))
            }
        };
        let e = entry.value_mut();
        e.lapse_block(&self.model, Scope::Consumer, now);
        e.last_seen = now;
        if e.group.as_deref() != who.group {
            e.group = who.group.map(str::to_string);
        }
        e.tracker
            .add_volume(n, now, self.options.volume_half_life_secs);
        for q in &mut queries {
            let out = e.tracker.ingest(&self.model, q, q.linked.is_some());
            q.suspicious_alone = out.probe || q.ood;
            q.suspicious = q.suspicious_alone || (q.linked.is_some() && !out.duplicate);
        }
        if let Some(owner) = queries.iter().find_map(|q| q.linked)
            && let Some(name) = self.flagged_names.get(&owner)
        {
            e.linked_to = Some(name.clone());
        }
        e.scores = SignalScores::from_raw(&e.tracker.raw(), &self.profile.consumer);
        e.combined = e.scores.combined();
        let computed = Action::from_score(e.combined, &self.profile.ladder);
        let consumer_action = e.escalate(computed, now, &self.options);
        let mut changed = std::mem::replace(&mut e.reported, consumer_action) != consumer_action;
        if consumer_action >= Action::Harden {
            if !e.published {
                e.published = true;
                self.flagged_names.insert(owner, who.consumer.to_string());
                let keys: Vec<u64> = e.tracker.recent_keys(self.model.q.history).collect();
                self.global.insert_keys(&keys, owner, now);
            }
            // Only suspicious queries: a flagged consumer's natural-looking queries (a seed
            // set, a replay) must not link benign consumers who query the same data.
            for q in queries.iter().filter(|q| q.suspicious) {
                let keys: Vec<u64> = q.hashes[..q.n_hashes]
                    .iter()
                    .map(|h| global_key(*h))
                    .collect();
                self.global.insert_keys(&keys, owner, now);
            }
        }
        let mut assessment = Assessment {
            scores: e.scores,
            combined: e.combined,
            queries_seen: e.tracker.queries,
            action: consumer_action,
            output: OutputPolicy::Full,
            throttle_factor: None,
            retry_after: None,
            reason: None,
            linked_to: e.linked_to.clone(),
            group: None,
            changed: false,
            hardened_rows: Vec::new(),
        };
        let mut block_until = (consumer_action == Action::Block).then_some(e.held_until);
        let mut reason = e.scores.top().0;
        drop(entry);

        // The group's merged stream.
        if let Some(group) = who.group {
            let mut entry = match self.groups.get_mut(group) {
                Some(entry) => entry,
                None => {
                    self.make_room(false, now);
                    self.groups
                        .entry(group.to_string())
                        .or_insert_with(|| Entry::new(Tracker::new(&self.model, Scope::Group), now))
                }
            };
            let g = entry.value_mut();
            g.lapse_block(&self.model, Scope::Group, now);
            g.last_seen = now;
            g.tracker
                .add_volume(n, now, self.options.volume_half_life_secs);
            for q in &queries {
                g.tracker.ingest(&self.model, q, false);
            }
            g.scores = SignalScores::group(&g.tracker.raw(), &self.profile.group);
            g.combined = g.scores.combined();
            let computed = Action::from_score(g.combined, &self.profile.ladder);
            let group_action = g.escalate(computed, now, &self.options);
            changed |= std::mem::replace(&mut g.reported, group_action) != group_action;
            if group_action > assessment.action {
                assessment.action = group_action;
                reason = g.scores.top().0;
            }
            if group_action == Action::Block {
                block_until = Some(block_until.unwrap_or(0).max(g.held_until));
            }
            assessment.group = Some(GroupAssessment {
                name: group.to_string(),
                scores: g.scores,
                combined: g.combined,
                queries_seen: g.tracker.queries,
                action: group_action,
            });
        }
        assessment.changed = changed;
        self.finish(&mut assessment, who.trusted, reason, block_until, now);
        // The answer to a row that is itself suspicious is hardened like a suspect's,
        // silently and before the consumer's score gets there, for consumers whose answers
        // are hardened anyway (untrusted): an attack's first probes then teach it no more
        // than their labels. (A hardened `output` also drops other floating outputs and
        // rewrites the answer, which these rows need.)
        if assessment.output != OutputPolicy::Full && assessment.action < Action::Harden {
            assessment.hardened_rows = (0..n).filter(|&i| queries[i].suspicious_alone).collect();
        }
        Ok(assessment)
    }

    /// Hardens `probabilities` (the answers to `rows`) as `a` says: every row per
    /// `a.output`, then the rows in `a.hardened_rows` per the suspect output.
    pub fn harden_assessed(&self, rows: &[f32], probabilities: &mut [f32], a: &Assessment) {
        self.harden(rows, probabilities, a.output);
        let (d, k) = (self.model.d, self.model.k);
        for &i in &a.hardened_rows {
            if let (Some(row), Some(p)) = (
                rows.get(i * d..(i + 1) * d),
                probabilities.get_mut(i * k..(i + 1) * k),
            ) {
                self.harden(row, p, self.options.suspect_output);
            }
        }
    }

    fn finish(
        &self,
        a: &mut Assessment,
        trusted: bool,
        reason: Signal,
        block_until: Option<u64>,
        now: u64,
    ) {
        let base = if trusted {
            OutputPolicy::Full
        } else {
            self.options.default_output
        };
        a.output = if a.action >= Action::Harden {
            base.stronger(self.options.suspect_output)
        } else {
            base
        };
        a.throttle_factor = (a.action == Action::Throttle).then_some(self.options.throttle_factor);
        if a.action == Action::Block {
            a.retry_after = Some(Duration::from_secs(
                block_until.unwrap_or(now).saturating_sub(now).max(1),
            ));
        }
        a.reason = (a.action > Action::None).then_some(reason);
    }

    /// The action in force for this identity right now (held from earlier requests), without
    /// feeding anything: a cheap check to run before the model. Unknown consumers get
    /// [`Action::None`] and create no state.
    pub fn action_for(&self, who: &Identity<'_>, now: u64) -> Action {
        let own = self
            .consumers
            .get(who.consumer)
            .map_or(Action::None, |e| e.held_action(now));
        let group = who
            .group
            .and_then(|g| self.groups.get(g))
            .map_or(Action::None, |e| e.held_action(now));
        own.max(group)
    }

    /// The denial to send when this identity is blocked (403 `extraction_suspected`, with
    /// `Retry-After` until the block ends); `None` when it is not blocked.
    pub fn denial_for(&self, who: &Identity<'_>, now: u64) -> Option<Denial> {
        let until = |e: &Entry| (e.held_action(now) == Action::Block).then_some(e.held_until);
        let own = self.consumers.get(who.consumer).and_then(|e| until(&e));
        let group = who
            .group
            .and_then(|g| self.groups.get(g))
            .and_then(|e| until(&e));
        let until = own.max(group)?;
        let mut denial = Denial::new(
            Code::ExtractionSuspected,
            "query pattern suspected of model extraction; contact the operator",
        );
        denial.retry_after = Some(Duration::from_secs(until.saturating_sub(now).max(1)));
        Some(denial)
    }

    /// Consumers and groups with an action above [`Action::None`] in force, strongest first.
    pub fn suspects(&self, now: u64) -> Vec<SuspectReport> {
        let mut out = Vec::new();
        let mut collect = |kind: SuspectKind, name: &str, e: &Entry| {
            let action = e.held_action(now);
            if action == Action::None {
                return;
            }
            let prefix = match kind {
                SuspectKind::Consumer => "consumer",
                SuspectKind::Group => "group",
            };
            out.push(SuspectReport {
                id: format!("{prefix}:{name}"),
                kind,
                name: name.to_string(),
                group: e.group.clone(),
                action,
                combined: e.combined,
                scores: e.scores,
                reason: Some(e.scores.top().0),
                queries_seen: e.tracker.queries,
                first_flagged: e.first_flagged,
                last_seen: e.last_seen,
                until: e.held_until,
                linked_to: e.linked_to.clone(),
            });
        };
        for e in self.consumers.iter() {
            collect(SuspectKind::Consumer, e.key(), e.value());
        }
        for e in self.groups.iter() {
            collect(SuspectKind::Group, e.key(), e.value());
        }
        out.sort_by(|a, b| {
            b.action
                .cmp(&a.action)
                .then(b.combined.total_cmp(&a.combined))
                .then(a.id.cmp(&b.id))
        });
        out
    }

    /// Forgets a suspect (operator decision): `consumer:<name>`, `group:<name>`, or a bare
    /// consumer name. Its state starts afresh. Returns whether anything was cleared.
    pub fn clear(&self, id: &str) -> bool {
        if let Some(name) = id.strip_prefix("group:") {
            return self.groups.remove(name).is_some();
        }
        let name = id.strip_prefix("consumer:").unwrap_or(id);
        let owner = self.owner(name);
        self.flagged_names.remove(&owner);
        self.global.forget(owner);
        self.consumers.remove(name).is_some()
    }

    /// Drops the state of consumers and groups idle for `idle_secs` (keeping blocks still
    /// in force). Returns how many entries were dropped.
    pub fn evict_idle(&self, now: u64) -> usize {
        let idle = self.options.idle_secs;
        let keep = |e: &Entry| e.last_seen + idle > now || e.held_action(now) == Action::Block;
        let before = self.consumers.len() + self.groups.len();
        self.consumers.retain(|_, e| keep(e));
        self.groups.retain(|_, e| keep(e));
        let live: std::collections::HashSet<u64> =
            self.consumers.iter().map(|e| self.owner(e.key())).collect();
        self.flagged_names.retain(|k, _| live.contains(k));
        before - (self.consumers.len() + self.groups.len())
    }

    /// (consumers, groups) currently tracked.
    pub fn tracked(&self) -> (usize, usize) {
        (self.consumers.len(), self.groups.len())
    }

    /// Heap bytes of one consumer's state plus its fixed overhead, for this profile.
    pub fn consumer_state_bytes(&self) -> usize {
        let t = Tracker::new(&self.model, Scope::Consumer);
        std::mem::size_of::<Entry>() + t.heap_bytes()
    }

    /// Same for one group.
    pub fn group_state_bytes(&self) -> usize {
        let t = Tracker::new(&self.model, Scope::Group);
        std::mem::size_of::<Entry>() + t.heap_bytes()
    }

    fn owner(&self, consumer: &str) -> u64 {
        let mut h = self.salt ^ 0xA076_1D64_78BD_642F;
        for b in consumer.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        mix64(h)
    }

    fn maybe_sweep(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now >= last + self.options.sweep_every_secs
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle(now);
        }
    }

    /// At capacity, sweeps idle entries; if still full, evicts the least recently seen entry
    /// without an action in force.
    fn make_room(&self, consumers: bool, now: u64) {
        let (map, cap) = if consumers {
            (&self.consumers, self.options.max_consumers)
        } else {
            (&self.groups, self.options.max_groups)
        };
        if map.len() < cap.max(1) {
            return;
        }
        self.evict_idle(now);
        if map.len() < cap.max(1) {
            return;
        }
        let victim = map
            .iter()
            .filter(|e| e.held_action(now) == Action::None)
            .min_by_key(|e| e.last_seen)
            .map(|e| e.key().clone());
        if let Some(v) = victim {
            map.remove(&v);
        }
    }
}

/// Global, TTL-bounded index of the fingerprints of flagged consumers: a query that shares
/// enough hashes with a recent query of a flagged consumer links the two (key rotation,
/// coalitions). Fixed size: direct-mapped slots in mutex-guarded shards; a newer entry
/// overwrites an older one in its slot, so under heavy load entries may lapse before the TTL.
struct GlobalIndex {
    shards: Vec<Mutex<Vec<GlobalSlot>>>,
    live: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct GlobalSlot {
    key: u64,
    owner: u64,
    time: u64,
}

const GLOBAL_SHARDS: usize = 64;

impl GlobalIndex {
    fn new(slots: usize) -> Self {
        let per = (slots / GLOBAL_SHARDS).max(16);
        GlobalIndex {
            shards: (0..GLOBAL_SHARDS)
                .map(|_| Mutex::new(vec![GlobalSlot::default(); per]))
                .collect(),
            live: AtomicU64::new(0),
        }
    }

    fn locate(&self, key: u64) -> (usize, u64) {
        let h = mix64(key);
        ((h as usize) % GLOBAL_SHARDS, h >> 8)
    }

    fn insert_keys(&self, keys: &[u64], owner: u64, now: u64) {
        for &key in keys {
            let (shard, pos) = self.locate(key);
            if let Ok(mut s) = self.shards[shard].lock() {
                let len = s.len();
                s[(pos as usize) % len] = GlobalSlot {
                    key,
                    owner,
                    time: now,
                };
            }
        }
        self.live.fetch_add(keys.len() as u64, Ordering::Relaxed);
    }

    /// The flagged owner (≠ `me`) sharing at least `fingerprint_match` hashes with `q`.
    fn linked(&self, q: &Query, me: u64, now: u64, m: &Model, o: &DetectorOptions) -> Option<u64> {
        if self.live.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut owners = [0u64; super::tracker::MAX_HASHES];
        let mut n = 0;
        for &h in &q.hashes[..q.n_hashes] {
            let key = global_key(h);
            let (shard, pos) = self.locate(key);
            let Ok(s) = self.shards[shard].lock() else {
                continue;
            };
            let slot = s[(pos as usize) % s.len()];
            if slot.key == key
                && slot.owner != me
                && slot.owner != 0
                && now.saturating_sub(slot.time) <= o.global_ttl_secs
            {
                owners[n] = slot.owner;
                n += 1;
            }
        }
        let owners = &mut owners[..n];
        owners.sort_unstable();
        let mut best = (0usize, 0u64);
        let mut run = 0;
        for i in 0..owners.len() {
            run = if i > 0 && owners[i] == owners[i - 1] {
                run + 1
            } else {
                1
            };
            if run > best.0 {
                best = (run, owners[i]);
            }
        }
        (best.0 >= m.q.fingerprint_match).then_some(best.1)
    }

    fn forget(&self, owner: u64) {
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                for slot in s.iter_mut().filter(|s| s.owner == owner) {
                    *slot = GlobalSlot::default();
                }
            }
        }
    }
}

/// A row's secret dither key: the row's bits folded into the salt two features at a time
/// (an odd multiply and a rotation per step, each a bijection of the state, so rows that
/// differ give different states), then mixed once. The same row always gets the same key.
fn dither_key(salt: u64, row: &[f32]) -> u64 {
    let pairs = row.chunks_exact(2);
    let tail = pairs
        .remainder()
        .first()
        .map_or(0, |v| u64::from(v.to_bits()));
    let mut h = salt ^ 0xD1B5_4A32_D192_ED03 ^ row.len() as u64;
    for pair in pairs {
        let word = u64::from(pair[0].to_bits()) | u64::from(pair[1].to_bits()) << 32;
        h = (h ^ word)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    mix64(h ^ tail)
}

#[cfg(test)]
mod tests {
    use super::dither_key;

    /// The same row gets the same key; a change of any one feature (the odd tail included),
    /// or another salt, gives another.
    #[test]
    fn dither_keys_follow_every_feature_and_the_salt() {
        for d in [64, 7] {
            let row: Vec<f32> = (0..d).map(|i| i as f32 * 0.5).collect();
            let base = dither_key(42, &row);
            assert_eq!(dither_key(42, &row), base);
            assert_ne!(dither_key(43, &row), base);
            let mut keys = vec![base];
            for i in 0..d {
                let mut changed = row.clone();
                changed[i] += 0.25;
                keys.push(dither_key(42, &changed));
            }
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), d + 1, "d {d}");
        }
    }
}
