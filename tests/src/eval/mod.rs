//! The model-extraction evaluation harness (issue #6): benign consumers and attack
//! simulators (`modelgate_plugins::extraction::sim`) against real `modelgate` processes over
//! HTTP on loopback.
//!
//! - Identities are HS256 JWTs the harness signs itself (`sub` = consumer, `tenant` = group),
//!   so thousands of consumers need no key issuance. The plan allows a million rows a second:
//!   rate limiting never interferes (not even the throttle rung's tenth of it).
//! - Every attack run gets a fresh guarded gateway (the detector's global fingerprint index
//!   would otherwise link one run to the previous one). After every answered query the
//!   harness reads `GET /admin/suspects` to learn the action in force.
//! - "Without the gateway" is the same attack (same seed) against a reference gateway whose
//!   route has no `[routes.extraction]`: the model's raw, full-precision outputs.
//! - Agreement is the fraction of evaluation rows on which the attacker's substitute predicts
//!   the real model's class. The held-out digits are split once: half is the attacker's
//!   natural (labelled) data, the other half the evaluation rows; benign consumers replay all.

pub mod report;

use std::net::SocketAddr;
use std::time::Instant;

use modelgate_plugins::extraction::sim::{self, AttackKind, Space, SplitMix64};
use modelgate_plugins::extraction::{BenignBehaviour, benign_session};
use serde_json::Value;

use crate::client::{self, Conn};
use crate::gateway::{GatewayProcess, Setup};
use crate::{holdout, repo_root};

const INFER: &str = "/v2/models/digits/infer";
const ISSUER: &str = "modelgate-eval";
const SECRET_ENV: &str = "MG_EVAL_JWT_SECRET";
/// Rows per request the model's route accepts (its metadata's `max_batch_size`).
const MAX_BATCH: usize = 64;

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// One run per attack per seed (single key, and split when `split_keys > 1`).
    pub seeds: Vec<u64>,
    pub attacks: Vec<AttackKind>,
    /// Attacks that are also run split over `split_keys` keys of one group.
    pub split_attacks: Vec<AttackKind>,
    pub split_keys: usize,
    /// Benign consumers, members per group (tenant), client threads.
    pub benign_consumers: usize,
    pub benign_group_size: usize,
    pub benign_threads: usize,
    /// Train substitutes for every run; `false` trains only those the targets need
    /// (Jacobian and equation solving), which keeps a debug-build quick run fast.
    pub all_agreements: bool,
    /// Benign consumers of the mixed phase (0: no mixed phase).
    pub mixed_consumers: usize,
    /// Rows of the random evaluation set (agreement on the attack's own input distribution).
    pub random_eval_rows: usize,
}

impl EvalConfig {
    /// The full run: 3 000 benign consumers, five seeds.
    pub fn full(benign_consumers: usize, seeds: usize) -> Self {
        EvalConfig {
            seeds: (1..=seeds as u64).collect(),
            attacks: AttackKind::ALL.to_vec(),
            split_attacks: split_attacks(),
            split_keys: 10,
            benign_consumers,
            benign_group_size: 10,
            benign_threads: 8,
            all_agreements: true,
            mixed_consumers: 300,
            random_eval_rows: 500,
        }
    }

    /// The test suite's version: a small sample, one seed, 30 consumers in the mixed phase.
    pub fn quick() -> Self {
        EvalConfig {
            seeds: vec![1],
            attacks: AttackKind::ALL.to_vec(),
            split_attacks: split_attacks(),
            split_keys: 10,
            benign_consumers: 60,
            benign_group_size: 10,
            benign_threads: 4,
            all_agreements: false,
            mixed_consumers: 30,
            random_eval_rows: 500,
        }
    }
}

/// Every attack but equation solving (a fixed d + 1 queries: nothing to split).
fn split_attacks() -> Vec<AttackKind> {
    AttackKind::ALL
        .into_iter()
        .filter(|k| {
            !matches!(
                k,
                AttackKind::EquationRandom | AttackKind::EquationInDistribution
            )
        })
        .collect()
}

/// The gateway config: JWT identities, a plan that never limits, the bundled model; with the
/// detector (`guarded`) or without it (the reference).
fn gateway_setup(guarded: bool, secret: &str) -> Setup {
    let models = repo_root().join("models");
    let extraction = if guarded {
        format!(
            "[routes.extraction]\nprofile = {:?}\n",
            models.join("digits.profile.json")
        )
    } else {
        String::new()
    };
    GatewayProcess::setup(&format!(
        "[[auth.jwt]]\nissuer = \"{ISSUER}\"\naudiences = [\"modelgate\"]\nalgorithms = [\"HS256\"]\n\
         hmac_secret_env = \"{SECRET_ENV}\"\ngroup_claim = \"tenant\"\ndefault_plan = \"eval\"\n\n\
         [plans.eval]\nrate = \"1000000/s\"\nburst = 1000000\n\n\
         [[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n{extraction}",
        models.join("digits.onnx"),
        models.join("digits.json"),
    ))
    .env(SECRET_ENV, secret)
}

/// Signs the harness's JWTs (HS256, one hour).
#[derive(Clone)]
pub struct Signer {
    secret: String,
    key: jsonwebtoken::EncodingKey,
}

impl Signer {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x7365_6372_6574);
        let secret: String = (0..48)
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect();
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        Signer { secret, key }
    }

    /// A token for `consumer`, in `tenant` when given, allowed the digits model.
    pub fn token(&self, consumer: &str, tenant: Option<&str>) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": "modelgate", "sub": consumer, "exp": exp, "scope": "digits",
        });
        if let Some(t) = tenant {
            claims["tenant"] = Value::from(t);
        }
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &self.key).expect("HS256 signing cannot fail")
    }
}

/// The outcome of one inference request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200: n × k probabilities (as the gateway returned them: raw, rounded or top-1).
    Probabilities(Vec<f32>),
    /// 403 `extraction_suspected`.
    Blocked,
    /// Anything else (status, body).
    Other(u16, String),
}

/// A keep-alive client that reconnects when the gateway closes the connection.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, conn: None }
    }

    /// Sends a raw request, reconnecting once on a connection error.
    pub fn request(&mut self, raw: &[u8]) -> client::Response {
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(Conn::open(self.addr).expect("connect to gateway"));
            }
            if let Some(conn) = self.conn.as_mut() {
                match conn.request(raw) {
                    Ok(r) => {
                        if r.header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            self.conn = None;
                        }
                        return r;
                    }
                    Err(_) => self.conn = None,
                }
            }
        }
        panic!("gateway at {} does not answer", self.addr);
    }

    /// `POST /v2/models/digits/infer` with `rows` (row-major, 64 features each).
    pub fn infer(&mut self, token: &str, rows: &[f32]) -> Answer {
        let raw = infer_request(token, rows);
        let r = self.request(&raw);
        parse_answer(&r)
    }
}

/// The raw bytes of an inference request (same rows, same bytes: retries are identical).
pub fn infer_request(token: &str, rows: &[f32]) -> Vec<u8> {
    let n = rows.len() / Space::DIGITS.d;
    let data: Vec<String> = rows.iter().map(|v| v.to_string()).collect();
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"input\",\"shape\":[{n},{}],\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
        Space::DIGITS.d,
        data.join(",")
    );
    client::post_bytes(
        INFER,
        body.as_bytes(),
        &format!("Authorization: Bearer {token}\r\n"),
    )
}

fn parse_answer(r: &client::Response) -> Answer {
    match r.status {
        200 => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let probabilities = v["outputs"]
                .as_array()
                .and_then(|o| o.iter().find(|o| o["name"] == "probabilities"))
                .and_then(|o| o["data"].as_array())
                .map(|d| {
                    d.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect()
                });
            match probabilities {
                Some(p) => Answer::Probabilities(p),
                None => Answer::Other(200, String::from_utf8_lossy(&r.body).into_owned()),
            }
        }
        403 if r.error_code() == "extraction_suspected" => Answer::Blocked,
        s => Answer::Other(s, String::from_utf8_lossy(&r.body).into_owned()),
    }
}

/// The ladder's rungs as the admin API names them, weakest first (index = rank).
pub const RUNGS: [&str; 5] = ["none", "observe", "harden", "throttle", "block"];

fn rank(action: &str) -> usize {
    RUNGS.iter().position(|r| *r == action).unwrap_or(0)
}

/// The gateway's count of requests on the digits route with rows answered with the top-1
/// label because each was itself suspicious (`/metrics`, action `harden_query`).
pub fn hardened_queries(admin: SocketAddr) -> u64 {
    let metrics = crate::gateway::admin_get(admin, "/metrics");
    let line = "modelgate_extraction_actions_total{route=\"digits\",action=\"harden_query\"} ";
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |n| n.trim().parse().expect("a counter"))
}

/// `GET /admin/suspects` → (id, action rank) of every suspect on the digits route.
pub fn suspects(admin: SocketAddr) -> Vec<(String, usize)> {
    let v = crate::gateway::admin_get(admin, "/admin/suspects").json();
    v["routes"]["digits"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["id"].as_str().unwrap_or_default().to_string(),
                        rank(s["action"].as_str().unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The shared inputs of a run: the attacker's natural data, evaluation rows and the real
/// model's classes for them (from the reference gateway), the signer, the reference gateway.
pub struct Bench {
    pub natural: Vec<(Vec<f32>, usize)>,
    pub eval_rows: Vec<Vec<f32>>,
    pub eval_labels: Vec<usize>,
    pub random_rows: Vec<Vec<f32>>,
    pub random_labels: Vec<usize>,
    pub holdout_rows: Vec<Vec<f32>>,
    pub holdout_labels: Vec<usize>,
    pub signer: Signer,
    pub reference: GatewayProcess,
}

impl Bench {
    /// Starts the reference gateway and labels the evaluation sets with the real model.
    pub fn new(config: &EvalConfig) -> Self {
        let (rows, labels) = holdout();
        let labels: Vec<usize> = labels.iter().map(|l| *l as usize).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        SplitMix64::new(0x5011_7000).shuffle(&mut order);
        let half = rows.len() / 2;
        let natural = order[..half]
            .iter()
            .map(|&i| (rows[i].clone(), labels[i]))
            .collect();
        let eval_rows: Vec<Vec<f32>> = order[half..].iter().map(|&i| rows[i].clone()).collect();
        let random_rows = sim::uniform_rows(Space::DIGITS, config.random_eval_rows, 0xe7a1);
        let signer = Signer::new(0x6d67);
        let reference = gateway_setup(false, &signer.secret).start();
        let mut client = Client::new(reference.addr);
        let token = signer.token("labeller", None);
        let eval_labels = classes(&mut client, &token, &eval_rows);
        let random_labels = classes(&mut client, &token, &random_rows);
        Bench {
            natural,
            eval_rows,
            eval_labels,
            random_rows,
            random_labels,
            holdout_rows: rows,
            holdout_labels: labels,
            signer,
            reference,
        }
    }

    /// Agreement of a substitute with the real model on the evaluation rows and on the
    /// random rows.
    pub fn agreement(&self, sub: &dyn sim::Classifier) -> (f64, f64) {
        (
            sim::agreement(sub, &self.eval_rows, &self.eval_labels),
            sim::agreement(sub, &self.random_rows, &self.random_labels),
        )
    }
}

/// The model's class for every row, in batches.
fn classes(client: &mut Client, token: &str, rows: &[Vec<f32>]) -> Vec<usize> {
    let k = Space::DIGITS.k;
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(MAX_BATCH) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        match client.infer(token, &flat) {
            Answer::Probabilities(p) => out.extend(p.chunks_exact(k).map(argmax)),
            other => panic!("reference gateway refused a request: {other:?}"),
        }
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, x)| {
            if *x > best.1 { (i, *x) } else { best }
        })
        .0
}

/// One attack run (single key or split) and what it achieved.
#[derive(Debug, Clone)]
pub struct AttackRun {
    pub kind: AttackKind,
    pub seed: u64,
    /// Keys the attack was spread over (1 = single key).
    pub keys: usize,
    /// Queries answered with 200 (the attacker's transcript).
    pub answered: usize,
    /// Queries the attack wanted to send but could not (every key blocked).
    pub stopped_by_block: bool,
    /// Per rung (index = rank in [`RUNGS`]): answered queries when the rung was first in
    /// force (the consumer's own for single keys, the group's for split runs).
    pub first: [Option<usize>; 5],
    /// Split runs: answered queries when any member key was first at harden or above.
    pub member_first_harden: Option<usize>,
    /// The strongest rung reached.
    pub max_rung: usize,
    /// Substitute agreement (evaluation rows, random rows) from the answers up to detection
    /// (harden), from all answers, and without the gateway at the same query counts.
    pub at_detection: Option<(f64, f64)>,
    pub final_agreement: Option<(f64, f64)>,
    pub reference_at_detection: Option<(f64, f64)>,
    pub reference_final: Option<(f64, f64)>,
    /// Queries the attack sent to the reference gateway (its full budget).
    pub reference_queries: usize,
    /// Jacobian: agreement of the substitute from the seed set alone, with the gateway and
    /// without it.
    pub seed_only: Option<(f64, f64)>,
    pub reference_seed_only: Option<(f64, f64)>,
    /// Equation solving: agreement of the linear solve on the top-1 labels of the answers
    /// alone (an attacker that discards the probabilities), with the gateway.
    pub label_only: Option<(f64, f64)>,
    pub seconds: f64,
}

impl AttackRun {
    /// Answered queries at the first harden (or stronger) rung: "detected".
    pub fn detected_at(&self) -> Option<usize> {
        self.first[2]
    }
}

/// Runs `kind` with `seed` over `keys` keys (1 = single) on a fresh guarded gateway, then
/// against the reference gateway, and trains the substitutes.
pub fn run_attack(
    bench: &Bench,
    config: &EvalConfig,
    kind: AttackKind,
    seed: u64,
    keys: usize,
) -> AttackRun {
    let started = Instant::now();
    let gateway = gateway_setup(true, &bench.signer.secret).start();
    let split = keys > 1;
    let group = format!("coalition-{seed}");
    let names: Vec<String> = (0..keys)
        .map(|i| {
            if split {
                format!("split-{seed}-{i}")
            } else {
                format!("attacker-{seed}")
            }
        })
        .collect();
    let tokens: Vec<String> = names
        .iter()
        .map(|n| bench.signer.token(n, split.then_some(group.as_str())))
        .collect();
    let mut live = vec![true; keys];
    let mut client = Client::new(gateway.addr);
    let mut attack = kind.build(Space::DIGITS, &bench.natural, seed);
    let (mut queries, mut answers) = (Vec::new(), Vec::new());
    let mut first = [None; 5];
    let mut member_first_harden = None;
    let mut max_rung = 0;
    let mut next_key = 0;
    let mut stopped_by_block = false;
    'attack: while let Some(q) = attack.next_query() {
        // Send the query with the next live key (round robin); a blocked key is dropped and
        // the query goes to the next one.
        let probabilities = loop {
            let Some(key) = (0..keys).map(|i| (next_key + i) % keys).find(|&i| live[i]) else {
                stopped_by_block = true;
                break 'attack;
            };
            next_key = (key + 1) % keys;
            match client.infer(&tokens[key], &q) {
                Answer::Probabilities(p) => break p,
                Answer::Blocked => live[key] = false,
                Answer::Other(status, body) => {
                    panic!("{} seed {seed}: unexpected {status}: {body}", kind.name())
                }
            }
        };
        attack.answer(&q, &probabilities);
        queries.push(q);
        answers.push(probabilities);
        let listed = suspects(gateway.admin);
        let level = |id: &str| {
            listed
                .iter()
                .filter(|(i, _)| i == id)
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(0)
        };
        let members = names
            .iter()
            .map(|n| level(&format!("consumer:{n}")))
            .max()
            .unwrap_or(0);
        let rung = if split {
            level(&format!("group:{group}"))
        } else {
            members
        };
        for (r, slot) in first.iter_mut().enumerate().skip(1) {
            if rung >= r && slot.is_none() {
                *slot = Some(queries.len());
            }
        }
        if members >= 2 && member_first_harden.is_none() {
            member_first_harden = Some(queries.len());
        }
        max_rung = max_rung.max(rung);
    }
    drop(gateway);

    // The same attack against the model's raw outputs.
    let mut reference_attack = kind.build(Space::DIGITS, &bench.natural, seed);
    let mut reference_client = Client::new(bench.reference.addr);
    let reference_token = bench.signer.token(&format!("reference-{seed}"), None);
    let (mut ref_queries, mut ref_answers) = (Vec::new(), Vec::new());
    while let Some(q) = reference_attack.next_query() {
        match reference_client.infer(&reference_token, &q) {
            Answer::Probabilities(p) => {
                reference_attack.answer(&q, &p);
                ref_queries.push(q);
                ref_answers.push(p);
            }
            other => panic!("reference gateway refused a query: {other:?}"),
        }
    }

    let wants = config.all_agreements
        || matches!(
            kind,
            AttackKind::Jacobian | AttackKind::EquationRandom | AttackKind::EquationInDistribution
        );
    let train = |qs: &[Vec<f32>], ans: &[Vec<f32>], n: usize| {
        let n = n.min(qs.len());
        bench.agreement(attack.substitute(&qs[..n], &ans[..n]).as_ref())
    };
    let detected = first[2];
    let seeds = kind.seed_queries(Space::DIGITS);
    let (at_detection, final_agreement, reference_at_detection, reference_final) = if wants {
        (
            detected.map(|n| train(&queries, &answers, n)),
            Some(train(&queries, &answers, queries.len())),
            detected.map(|n| train(&ref_queries, &ref_answers, n)),
            Some(train(&ref_queries, &ref_answers, ref_queries.len())),
        )
    } else {
        (None, None, None, None)
    };
    let label_only = matches!(
        kind,
        AttackKind::EquationRandom | AttackKind::EquationInDistribution
    )
    .then(|| {
        let labels: Vec<Vec<f32>> = answers
            .iter()
            .map(|p| {
                let top = argmax(p);
                (0..p.len())
                    .map(|c| f32::from(u8::from(c == top)))
                    .collect()
            })
            .collect();
        bench.agreement(&sim::LinearSoftmax::solve(Space::DIGITS, &queries, &labels))
    });
    let jacobian = kind == AttackKind::Jacobian;
    let seed_only = jacobian.then(|| train(&queries, &answers, seeds));
    let reference_seed_only = jacobian.then(|| train(&ref_queries, &ref_answers, seeds));
    AttackRun {
        kind,
        seed,
        keys,
        answered: queries.len(),
        stopped_by_block,
        first,
        member_first_harden,
        max_rung,
        at_detection,
        final_agreement,
        reference_at_detection,
        reference_final,
        reference_queries: ref_queries.len(),
        seed_only,
        reference_seed_only,
        label_only,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// What the benign consumers experienced.
#[derive(Debug, Clone, Default)]
pub struct BenignResult {
    pub consumers: usize,
    pub groups: usize,
    pub requests: usize,
    pub rows: usize,
    /// Answers other than 200 (403, 429, errors).
    pub refused: usize,
    /// Requests with rows answered with the top-1 label because each was itself suspicious
    /// (the gateway's `harden_query` count over the phase).
    pub hardened_queries: u64,
    /// Consumers / groups the detector listed at any rung (observe or stronger).
    pub flagged_consumers: Vec<String>,
    pub flagged_groups: Vec<String>,
    /// What the admin API said about each flagged one (action, reason, scores).
    pub flagged_details: Vec<String>,
    /// Requests per behaviour.
    pub per_behaviour: Vec<(String, usize)>,
    pub seconds: f64,
}

/// Benign consumers replaying every held-out row with the calibration's behaviours (random
/// order, sorted by class, small noise, byte-identical retries, bursts of batched rows,
/// mixed), in groups of `benign_group_size`, on one fresh guarded gateway.
pub fn run_benign(bench: &Bench, config: &EvalConfig) -> BenignResult {
    let gateway = gateway_setup(true, &bench.signer.secret).start();
    benign_on(&gateway, bench, config, config.benign_consumers)
}

/// The mixed phase: every attack (seed 1, single key) runs to its end on one guarded gateway
/// (flagged attackers publish their fingerprints to the global index), then `n` benign
/// consumers replay the held-out rows on the same gateway. Returns the attackers that reached
/// harden or stronger, and what the benign consumers experienced (flagged attackers excluded).
pub fn run_mixed(bench: &Bench, config: &EvalConfig, n: usize) -> (Vec<String>, BenignResult) {
    let gateway = gateway_setup(true, &bench.signer.secret).start();
    let mut client = Client::new(gateway.addr);
    for kind in &config.attacks {
        let token = bench.signer.token(&format!("mixed-{}", kind.name()), None);
        let mut attack = kind.build(Space::DIGITS, &bench.natural, 1);
        while let Some(q) = attack.next_query() {
            match client.infer(&token, &q) {
                Answer::Probabilities(p) => attack.answer(&q, &p),
                _ => break,
            }
        }
    }
    let attackers: Vec<String> = suspects(gateway.admin)
        .into_iter()
        .filter(|(_, r)| *r >= 2)
        .map(|(id, _)| id)
        .collect();
    let mut benign = benign_on(&gateway, bench, config, n);
    benign
        .flagged_consumers
        .retain(|c| !c.starts_with("mixed-"));
    (attackers, benign)
}

fn benign_on(
    gateway: &GatewayProcess,
    bench: &Bench,
    config: &EvalConfig,
    n: usize,
) -> BenignResult {
    let started = Instant::now();
    let hardened_before = hardened_queries(gateway.admin);
    let threads = config.benign_threads.max(1);
    let behaviours = BenignBehaviour::ALL;
    let results: Vec<(usize, usize, usize, Vec<usize>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    let mut client = Client::new(gateway.addr);
                    let (mut requests, mut rows, mut refused) = (0, 0, 0);
                    let mut per_behaviour = vec![0usize; behaviours.len()];
                    for c in (w..n).step_by(threads) {
                        let b = c % behaviours.len();
                        let tenant = format!("org-{}", c / config.benign_group_size.max(1));
                        let token = bench.signer.token(&format!("benign-{c:05}"), Some(&tenant));
                        let session = benign_session(
                            &bench.holdout_rows,
                            &bench.holdout_labels,
                            behaviours[b],
                            (Space::DIGITS.lo, Space::DIGITS.hi),
                            1.0 / 16.0,
                            0xbe_0000 + c as u64,
                        );
                        for req in &session {
                            requests += 1;
                            per_behaviour[b] += 1;
                            rows += req.sources.len();
                            if !matches!(client.infer(&token, &req.rows), Answer::Probabilities(_))
                            {
                                refused += 1;
                            }
                        }
                    }
                    (requests, rows, refused, per_behaviour)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benign worker"))
            .collect()
    });
    let listed = suspects(gateway.admin);
    let details: Vec<String> =
        crate::gateway::admin_get(gateway.admin, "/admin/suspects").json()["routes"]["digits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| {
                        !s["id"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with("consumer:mixed-")
                    })
                    .map(|s| {
                        format!(
                            "{} {} (reason {}, combined {:.2}, scores {})",
                            s["id"].as_str().unwrap_or_default(),
                            s["action"].as_str().unwrap_or_default(),
                            s["reason"].as_str().unwrap_or_default(),
                            s["combined"].as_f64().unwrap_or_default(),
                            s["scores"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
    // Read last: requests are counted just after their response is written.
    let hardened = hardened_queries(gateway.admin) - hardened_before;
    let mut result = BenignResult {
        consumers: n,
        groups: n.div_ceil(config.benign_group_size.max(1)),
        hardened_queries: hardened,
        ..BenignResult::default()
    };
    let mut per_behaviour = vec![0usize; behaviours.len()];
    for (requests, rows, refused, per) in results {
        result.requests += requests;
        result.rows += rows;
        result.refused += refused;
        for (a, b) in per_behaviour.iter_mut().zip(per) {
            *a += b;
        }
    }
    result.per_behaviour = behaviours
        .iter()
        .zip(per_behaviour)
        .map(|(b, n)| (format!("{b:?}"), n))
        .collect();
    for (id, r) in listed {
        if r == 0 {
            continue;
        }
        if let Some(name) = id.strip_prefix("consumer:") {
            result.flagged_consumers.push(name.to_string());
        } else if let Some(name) = id.strip_prefix("group:") {
            result.flagged_groups.push(name.to_string());
        }
    }
    result.flagged_details = details;
    // The audit records say which signal fired when (the admin view shows scores now).
    result.flagged_details.extend(
        gateway
            .logs()
            .lines()
            .filter(|l| l.contains("\"event\":\"extraction_suspected\"") && !l.contains("mixed-"))
            .take(10)
            .map(|l| l.chars().skip_while(|c| *c != '{').collect::<String>()),
    );
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// Everything one evaluation produced.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub benign: BenignResult,
    /// The mixed phase (`mixed_consumers` > 0): attackers flagged, then benign consumers on
    /// the same gateway.
    pub mixed: Option<(Vec<String>, BenignResult)>,
    pub single: Vec<AttackRun>,
    pub split: Vec<AttackRun>,
    /// Rows of the random evaluation set.
    pub random_rows: usize,
    /// Agreement of a constant classifier (the most common class) on the evaluation rows and
    /// on the random rows.
    pub baselines: (f64, f64),
    pub seconds: f64,
}

/// Runs the benign phase, then every attack (single, then split) for every seed.
/// `progress` receives one line per finished phase or run.
pub fn evaluate(config: &EvalConfig, mut progress: impl FnMut(&str)) -> Evaluation {
    let started = Instant::now();
    let bench = Bench::new(config);
    let benign = run_benign(&bench, config);
    progress(&format!(
        "benign: {} consumers, {} requests, {} flagged, {:.1} s {:?}",
        benign.consumers,
        benign.requests,
        benign.flagged_consumers.len() + benign.flagged_groups.len(),
        benign.seconds,
        benign.flagged_details
    ));
    let mixed = (config.mixed_consumers > 0).then(|| {
        let (attackers, benign) = run_mixed(&bench, config, config.mixed_consumers);
        progress(&format!(
            "mixed: attackers flagged {attackers:?}; {} benign consumers, {} flagged",
            benign.consumers,
            benign.flagged_consumers.len() + benign.flagged_groups.len()
        ));
        (attackers, benign)
    });
    let mut single = Vec::new();
    let mut split = Vec::new();
    for &seed in &config.seeds {
        for &kind in &config.attacks {
            let run = run_attack(&bench, config, kind, seed, 1);
            progress(&describe(&run));
            single.push(run);
        }
        if config.split_keys > 1 {
            for &kind in &config.split_attacks {
                let run = run_attack(&bench, config, kind, seed, config.split_keys);
                progress(&describe(&run));
                split.push(run);
            }
        }
    }
    let majority = |labels: &[usize]| {
        let mut counts = [0usize; Space::DIGITS.k];
        labels.iter().for_each(|l| counts[*l] += 1);
        counts.iter().max().copied().unwrap_or(0) as f64 / labels.len().max(1) as f64
    };
    Evaluation {
        benign,
        mixed,
        single,
        split,
        random_rows: bench.random_rows.len(),
        baselines: (majority(&bench.eval_labels), majority(&bench.random_labels)),
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn describe(run: &AttackRun) -> String {
    format!(
        "{} seed {} keys {}: answered {}, observe {:?}, harden {:?}, block {:?}, member harden {:?}, at detection {:?}, final {:?}, reference {:?}, seed only {:?} ({:.1} s)",
        run.kind.name(),
        run.seed,
        run.keys,
        run.answered,
        run.first[1],
        run.first[2],
        run.first[4],
        run.member_first_harden,
        run.at_detection,
        run.final_agreement,
        run.reference_final,
        run.seed_only,
        run.seconds,
    )
}
