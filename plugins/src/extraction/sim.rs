//! Model-extraction attack simulators and the substitute models attackers train from the
//! answers they get (feature `sim`; always on in this crate's tests). Shared by the
//! detector's in-process simulations and the HTTP evaluation harness (`modelgate-e2e`'s
//! `extraction-eval`), so both run the same attacks.
//!
//! An [`Attack`] is a query generator that may adapt to the answers: the driver asks for
//! [`Attack::next_query`], sends it to some oracle (a model in process, a gateway over HTTP),
//! and hands the answer back with [`Attack::answer`]. Everything is deterministic for a
//! seed; nothing here does I/O.

use super::harden::argmax;
pub use super::rng::SplitMix64;

/// The input space of a model: `d` features in `[lo, hi]`, `k` classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Space {
    pub d: usize,
    pub k: usize,
    pub lo: f32,
    pub hi: f32,
}

impl Space {
    /// The bundled digits model: 8×8 pixels in [0, 16], ten classes.
    pub const DIGITS: Space = Space {
        d: 64,
        k: 10,
        lo: 0.0,
        hi: 16.0,
    };

    fn clip(&self, v: f32) -> f32 {
        v.clamp(self.lo, self.hi)
    }

    fn width(&self) -> f32 {
        self.hi - self.lo
    }
}

/// A trained classifier: the attacker's copy of the model.
pub trait Classifier {
    /// The predicted class of one row.
    fn class(&self, row: &[f32]) -> usize;
}

/// Fraction of `rows` on which `c` predicts `labels` (0 for no rows).
pub fn agreement(c: &dyn Classifier, rows: &[Vec<f32>], labels: &[usize]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    let same = rows
        .iter()
        .zip(labels)
        .filter(|(r, l)| c.class(r) == **l)
        .count();
    same as f64 / rows.len() as f64
}

/// One attack: a query generator that may adapt to the answers it gets.
pub trait Attack: Send {
    /// The next query (one row of `d` features), or `None` when the attack is done.
    fn next_query(&mut self) -> Option<Vec<f32>>;

    /// The oracle's answer (k probabilities, possibly hardened) to the query last returned
    /// by [`next_query`](Self::next_query).
    fn answer(&mut self, query: &[f32], probabilities: &[f32]);

    /// The substitute the attacker trains from `answers[i]` to `queries[i]`: softmax
    /// regression unless the attack says otherwise.
    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier>;
}

/// Jacobian augmentation: seed rows per class, augmentation rounds, step (fraction of range).
const JACOBIAN_PER_CLASS: usize = 3;
const JACOBIAN_ROUNDS: usize = 4;
const JACOBIAN_STEP: f32 = 0.3;

/// The attacks the evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackKind {
    /// Uniform random rows over the input range.
    UniformRandom,
    /// A natural pool that is not digits: shapes, lines, rings, gradients, checkerboards,
    /// sparse noise, inverted and pixel-shuffled digits.
    OodPool,
    /// Papernot et al. (2017): a labelled seed set (3 per class), then four Jacobian-based
    /// augmentation rounds `x + λ·sign(∇ log p_y(x))` on the substitute (each doubles the
    /// set), λ = 30 % of the range: the step at which augmentation measurably improves this
    /// softmax-regression substitute over its seed set (at 10 % it does not).
    Jacobian,
    /// Tramèr et al. (2016) equation solving: d + 1 uniform random rows, a linear softmax
    /// model solved from the log-probability ratios.
    EquationRandom,
    /// The same with d + 1 in-distribution rows from the attacker's natural data.
    EquationInDistribution,
    /// Boundary line search: bisection between natural rows of different labels, 10 steps
    /// per pair.
    LineSearch,
    /// NES-style gradient probing (Ilyas et al. 2018): antithetic Gaussian probes around a
    /// point, a signed gradient step towards another class, repeat.
    NesProbing,
    /// In-distribution copycat (Knockoff Nets): the attacker's natural rows in random order,
    /// then noisy copies of them.
    Copycat,
}

impl AttackKind {
    /// Every attack.
    pub const ALL: [AttackKind; 8] = [
        AttackKind::UniformRandom,
        AttackKind::OodPool,
        AttackKind::Jacobian,
        AttackKind::EquationRandom,
        AttackKind::EquationInDistribution,
        AttackKind::LineSearch,
        AttackKind::NesProbing,
        AttackKind::Copycat,
    ];

    /// Stable kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::UniformRandom => "uniform-random",
            AttackKind::OodPool => "ood-pool",
            AttackKind::Jacobian => "jacobian",
            AttackKind::EquationRandom => "equation-random",
            AttackKind::EquationInDistribution => "equation-in-dist",
            AttackKind::LineSearch => "line-search",
            AttackKind::NesProbing => "nes-probing",
            AttackKind::Copycat => "copycat",
        }
    }

    /// The attack named `name`.
    pub fn from_name(name: &str) -> Option<AttackKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Queries of the attack's seed set (answered before it adapts): the Jacobian attack's
    /// labelled seeds; 0 for the others.
    pub fn seed_queries(self, space: Space) -> usize {
        match self {
            AttackKind::Jacobian => JACOBIAN_PER_CLASS * space.k,
            _ => 0,
        }
    }

    /// Builds the attack. `natural` is the attacker's own labelled in-distribution data
    /// (rows and true labels); `seed` fixes every random choice.
    pub fn build(self, space: Space, natural: &[(Vec<f32>, usize)], seed: u64) -> Box<dyn Attack> {
        let mut rng = SplitMix64::new(seed ^ 0x5eed_a77a_c4ed_0001);
        let mut shuffled = natural.to_vec();
        rng.shuffle(&mut shuffled);
        match self {
            AttackKind::UniformRandom => {
                Box::new(Fixed::new(space, uniform_rows(space, 100, seed)))
            }
            AttackKind::OodPool => Box::new(Fixed::new(space, ood_pool(space, natural, 100, seed))),
            AttackKind::Jacobian => Box::new(Jacobian::new(
                space,
                &shuffled,
                JACOBIAN_PER_CLASS,
                JACOBIAN_ROUNDS,
            )),
            AttackKind::EquationRandom => Box::new(EquationSolving::new(
                space,
                uniform_rows(space, space.d + 1, seed),
            )),
            AttackKind::EquationInDistribution => Box::new(EquationSolving::new(
                space,
                shuffled
                    .iter()
                    .map(|(r, _)| r.clone())
                    .take(space.d + 1)
                    .collect(),
            )),
            AttackKind::LineSearch => Box::new(LineSearch::new(space, shuffled, 12, 10, seed)),
            AttackKind::NesProbing => Box::new(Nes::new(space, shuffled, seed)),
            AttackKind::Copycat => {
                let mut rows: Vec<Vec<f32>> = shuffled.iter().map(|(r, _)| r.clone()).collect();
                let noisy: Vec<Vec<f32>> = rows
                    .iter()
                    .map(|r| {
                        r.iter()
                            .map(|x| space.clip(x + 0.5 * rng.normal() as f32))
                            .collect()
                    })
                    .collect();
                rows.extend(noisy);
                Box::new(Fixed::new(space, rows))
            }
        }
    }
}

/// `n` rows uniform over the space (reproducible).
pub fn uniform_rows(space: Space, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            (0..space.d)
                .map(|_| space.lo + rng.next_f64() as f32 * space.width())
                .collect()
        })
        .collect()
}

/// `n` natural-looking rows that are not digits, for a square image space (d = side²).
pub fn ood_pool(space: Space, natural: &[(Vec<f32>, usize)], n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed ^ 0x00d0_00d0);
    let side = (space.d as f64).sqrt() as usize;
    let (lo, hi) = (space.lo, space.hi);
    let at = |img: &mut [f32], x: i64, y: i64, v: f32| {
        if (0..side as i64).contains(&x) && (0..side as i64).contains(&y) {
            let p = &mut img[y as usize * side + x as usize];
            *p = p.max(v);
        }
    };
    (0..n)
        .map(|_| {
            let mut img = vec![lo; space.d];
            let coord = |rng: &mut SplitMix64| rng.below(side) as i64;
            match rng.below(9) {
                0 | 1 => {
                    // Filled or outlined rectangle.
                    let (x0, x1) = (coord(&mut rng), coord(&mut rng));
                    let (y0, y1) = (coord(&mut rng), coord(&mut rng));
                    let outline = rng.below(2) == 0;
                    for y in y0.min(y1)..=y0.max(y1) {
                        for x in x0.min(x1)..=x0.max(x1) {
                            let edge = x == x0 || x == x1 || y == y0 || y == y1;
                            if !outline || edge {
                                at(&mut img, x, y, hi);
                            }
                        }
                    }
                }
                2 => {
                    // A thick straight line.
                    let (x0, y0, x1, y1) = (
                        coord(&mut rng) as f32,
                        coord(&mut rng) as f32,
                        coord(&mut rng) as f32,
                        coord(&mut rng) as f32,
                    );
                    for s in 0..=32 {
                        let t = s as f32 / 32.0;
                        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
                        at(&mut img, x.round() as i64, y.round() as i64, hi);
                        at(&mut img, x.round() as i64 + 1, y.round() as i64, hi / 2.0);
                    }
                }
                3 => {
                    // Disk or ring.
                    let (cx, cy) = (
                        rng.next_f64() as f32 * side as f32,
                        rng.next_f64() as f32 * side as f32,
                    );
                    let r = 1.0 + rng.next_f64() as f32 * side as f32 / 2.0;
                    let ring = rng.below(2) == 0;
                    for y in 0..side {
                        for x in 0..side {
                            let dist = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                            let v = if ring {
                                (1.0 - (dist - r).abs()).max(0.0)
                            } else if dist <= r {
                                1.0
                            } else {
                                0.0
                            };
                            img[y * side + x] = lo + v * (hi - lo);
                        }
                    }
                }
                4 => {
                    // Linear gradient in a random direction.
                    let angle = rng.next_f64() as f32 * std::f32::consts::TAU;
                    let (c, s) = (angle.cos(), angle.sin());
                    for y in 0..side {
                        for x in 0..side {
                            let u = (x as f32 * c + y as f32 * s) / side as f32 + 0.5;
                            img[y * side + x] = lo + u.clamp(0.0, 1.0) * (hi - lo);
                        }
                    }
                }
                5 => {
                    // Checkerboard with 1- or 2-pixel cells.
                    let cell = 1 + rng.below(2);
                    for y in 0..side {
                        for x in 0..side {
                            if (x / cell + y / cell).is_multiple_of(2) {
                                img[y * side + x] = hi;
                            }
                        }
                    }
                }
                6 => {
                    // Sparse bright pixels.
                    for p in img.iter_mut() {
                        if rng.below(3) == 0 {
                            *p = hi;
                        }
                    }
                }
                7 if !natural.is_empty() => {
                    // An inverted digit.
                    let (row, _) = &natural[rng.below(natural.len())];
                    for (p, x) in img.iter_mut().zip(row) {
                        *p = hi + lo - x;
                    }
                }
                _ if !natural.is_empty() => {
                    // A digit with its pixels shuffled.
                    img.clone_from(&natural[rng.below(natural.len())].0);
                    rng.shuffle(&mut img);
                }
                _ => img.iter_mut().for_each(|p| *p = hi),
            }
            img
        })
        .collect()
}

/// Queries a fixed list of rows in order (random, OOD pool, copycat).
struct Fixed {
    space: Space,
    rows: std::vec::IntoIter<Vec<f32>>,
}

impl Fixed {
    fn new(space: Space, rows: Vec<Vec<f32>>) -> Self {
        Fixed {
            space,
            rows: rows.into_iter(),
        }
    }
}

impl Attack for Fixed {
    fn next_query(&mut self) -> Option<Vec<f32>> {
        self.rows.next()
    }

    fn answer(&mut self, _: &[f32], _: &[f32]) {}

    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier> {
        Box::new(SoftmaxRegression::train(self.space, queries, answers))
    }
}

/// Papernot-style Jacobian-based dataset augmentation.
struct Jacobian {
    space: Space,
    /// Seed rows still to query, then each round's augmented rows.
    queue: std::collections::VecDeque<Vec<f32>>,
    /// Every answered row with its answer.
    answered: Vec<(Vec<f32>, Vec<f32>)>,
    rounds_left: usize,
    lambda: f32,
}

impl Jacobian {
    fn new(space: Space, natural: &[(Vec<f32>, usize)], per_class: usize, rounds: usize) -> Self {
        let mut queue = std::collections::VecDeque::new();
        for c in 0..space.k {
            queue.extend(
                natural
                    .iter()
                    .filter(|(_, l)| *l == c)
                    .take(per_class)
                    .map(|(r, _)| r.clone()),
            );
        }
        Jacobian {
            space,
            queue,
            answered: Vec::new(),
            rounds_left: rounds,
            lambda: JACOBIAN_STEP * space.width(),
        }
    }
}

impl Attack for Jacobian {
    fn next_query(&mut self) -> Option<Vec<f32>> {
        if self.queue.is_empty() && self.rounds_left > 0 && !self.answered.is_empty() {
            self.rounds_left -= 1;
            let (rows, answers): (Vec<_>, Vec<_>) = self.answered.iter().cloned().unzip();
            let sub = SoftmaxRegression::train(self.space, &rows, &answers);
            for (x, a) in &self.answered {
                let g = sub.log_prob_gradient(x, argmax(a));
                self.queue.push_back(
                    x.iter()
                        .zip(&g)
                        .map(|(v, g)| self.space.clip(v + self.lambda * g.signum()))
                        .collect(),
                );
            }
        }
        self.queue.pop_front()
    }

    fn answer(&mut self, query: &[f32], probabilities: &[f32]) {
        self.answered.push((query.to_vec(), probabilities.to_vec()));
    }

    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier> {
        Box::new(SoftmaxRegression::train(self.space, queries, answers))
    }
}

/// Tramèr-style equation solving for a linear softmax model.
struct EquationSolving {
    space: Space,
    rows: std::vec::IntoIter<Vec<f32>>,
}

impl EquationSolving {
    fn new(space: Space, rows: Vec<Vec<f32>>) -> Self {
        EquationSolving {
            space,
            rows: rows.into_iter(),
        }
    }
}

impl Attack for EquationSolving {
    fn next_query(&mut self) -> Option<Vec<f32>> {
        self.rows.next()
    }

    fn answer(&mut self, _: &[f32], _: &[f32]) {}

    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier> {
        Box::new(LinearSoftmax::solve(self.space, queries, answers))
    }
}

/// Bisection for a decision boundary on the segment from `a` (label `label_a`) to `b`.
#[derive(Debug, Clone)]
pub struct Bisection {
    a: Vec<f32>,
    b: Vec<f32>,
    label_a: usize,
    lo: f32,
    hi: f32,
}

impl Bisection {
    pub fn new(a: Vec<f32>, b: Vec<f32>, label_a: usize) -> Self {
        Bisection {
            a,
            b,
            label_a,
            lo: 0.0,
            hi: 1.0,
        }
    }

    /// The next point to query: the middle of the current bracket.
    pub fn point(&self) -> Vec<f32> {
        let t = (self.lo + self.hi) / 2.0;
        self.a
            .iter()
            .zip(&self.b)
            .map(|(p, q)| p + t * (q - p))
            .collect()
    }

    /// Narrows the bracket with the class the oracle gave [`point`](Self::point).
    pub fn update(&mut self, class: usize) {
        let t = (self.lo + self.hi) / 2.0;
        if class == self.label_a {
            self.lo = t;
        } else {
            self.hi = t;
        }
    }
}

/// Boundary line search over pairs of natural rows with different labels.
struct LineSearch {
    space: Space,
    natural: Vec<(Vec<f32>, usize)>,
    rng: SplitMix64,
    pairs_left: usize,
    steps: usize,
    current: Option<(Bisection, usize)>,
}

impl LineSearch {
    fn new(
        space: Space,
        natural: Vec<(Vec<f32>, usize)>,
        pairs: usize,
        steps: usize,
        seed: u64,
    ) -> Self {
        LineSearch {
            space,
            natural,
            rng: SplitMix64::new(seed ^ 0x11e5_ea7c),
            pairs_left: pairs,
            steps,
            current: None,
        }
    }
}

impl Attack for LineSearch {
    fn next_query(&mut self) -> Option<Vec<f32>> {
        if self.current.as_ref().is_none_or(|(_, left)| *left == 0) {
            if self.pairs_left == 0 || self.natural.len() < 2 {
                return None;
            }
            self.pairs_left -= 1;
            let n = self.natural.len();
            let (i, mut j) = (self.rng.below(n), self.rng.below(n));
            for _ in 0..100 {
                if self.natural[j].1 != self.natural[i].1 {
                    break;
                }
                j = self.rng.below(n);
            }
            let (a, la) = self.natural[i].clone();
            let b = self.natural[j].0.clone();
            self.current = Some((Bisection::new(a, b, la), self.steps));
        }
        self.current.as_ref().map(|(b, _)| b.point())
    }

    fn answer(&mut self, _: &[f32], probabilities: &[f32]) {
        if let Some((b, left)) = self.current.as_mut() {
            b.update(argmax(probabilities));
            *left = left.saturating_sub(1);
        }
    }

    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier> {
        Box::new(SoftmaxRegression::train(self.space, queries, answers))
    }
}

/// NES gradient probing: `pairs` antithetic probes x ± σu, then x ← x + η·sign(ĝ) where ĝ
/// estimates ∇ log p_target; `iterations` steps per start point.
struct Nes {
    space: Space,
    natural: Vec<(Vec<f32>, usize)>,
    rng: SplitMix64,
    starts_left: usize,
    x: Vec<f32>,
    target: usize,
    iterations_left: usize,
    directions: Vec<Vec<f32>>,
    /// log p_target of the answers in this iteration (+, − alternating).
    values: Vec<f32>,
    sigma: f32,
    eta: f32,
    pairs: usize,
    iterations: usize,
}

impl Nes {
    fn new(space: Space, natural: Vec<(Vec<f32>, usize)>, seed: u64) -> Self {
        Nes {
            space,
            natural,
            rng: SplitMix64::new(seed ^ 0x0e5e_5eed),
            starts_left: 2,
            x: Vec::new(),
            target: 0,
            iterations_left: 0,
            directions: Vec::new(),
            values: Vec::new(),
            sigma: space.width() / 32.0,
            eta: space.width() / 32.0,
            pairs: 10,
            iterations: 5,
        }
    }

    fn probe(&self, i: usize) -> Vec<f32> {
        let sign = if i.is_multiple_of(2) { 1.0 } else { -1.0 };
        self.x
            .iter()
            .zip(&self.directions[i / 2])
            .map(|(x, u)| self.space.clip(x + sign * self.sigma * u))
            .collect()
    }
}

impl Attack for Nes {
    fn next_query(&mut self) -> Option<Vec<f32>> {
        if self.values.len() == 2 * self.pairs && !self.directions.is_empty() {
            // Step along the estimated gradient's sign, then start the next iteration.
            let mut g = vec![0f32; self.space.d];
            for (i, u) in self.directions.iter().enumerate() {
                let diff = self.values[2 * i] - self.values[2 * i + 1];
                for (gj, uj) in g.iter_mut().zip(u) {
                    *gj += diff * uj;
                }
            }
            for (x, g) in self.x.iter_mut().zip(&g) {
                *x = self.space.clip(*x + self.eta * g.signum());
            }
            self.directions.clear();
            self.values.clear();
            self.iterations_left = self.iterations_left.saturating_sub(1);
        }
        if self.directions.is_empty() {
            if self.iterations_left == 0 {
                if self.starts_left == 0 || self.natural.is_empty() {
                    return None;
                }
                self.starts_left -= 1;
                let (x, label) = self.natural[self.rng.below(self.natural.len())].clone();
                self.x = x;
                self.target = (label + 1 + self.rng.below(self.space.k - 1)) % self.space.k;
                self.iterations_left = self.iterations;
            }
            self.directions = (0..self.pairs)
                .map(|_| {
                    (0..self.space.d)
                        .map(|_| self.rng.normal() as f32)
                        .collect()
                })
                .collect();
        }
        Some(self.probe(self.values.len()))
    }

    fn answer(&mut self, _: &[f32], probabilities: &[f32]) {
        let p = probabilities.get(self.target).copied().unwrap_or(0.0);
        self.values.push(p.max(1e-6).ln());
    }

    fn substitute(&self, queries: &[Vec<f32>], answers: &[Vec<f32>]) -> Box<dyn Classifier> {
        Box::new(SoftmaxRegression::train(self.space, queries, answers))
    }
}

/// Multinomial logistic regression on inputs scaled to [0, 1], trained by full-batch
/// gradient descent with momentum on the answers as soft targets (zero start: deterministic).
#[derive(Debug, Clone)]
pub struct SoftmaxRegression {
    space: Space,
    /// k × (d + 1), bias last.
    w: Vec<f32>,
}

impl SoftmaxRegression {
    const EPOCHS: usize = 150;
    const RATE: f32 = 2.0;
    const MOMENTUM: f32 = 0.9;
    const L2: f32 = 1e-4;

    /// Trains on `targets[i]` (probabilities, normalised here; hardened answers included)
    /// for `rows[i]`. No rows: a model that always predicts class 0.
    pub fn train(space: Space, rows: &[Vec<f32>], targets: &[Vec<f32>]) -> Self {
        let (d, k) = (space.d, space.k);
        let dd = d + 1;
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                r.iter()
                    .map(|v| (v - space.lo) / space.width())
                    .chain([1.0])
            })
            .collect();
        let ys: Vec<f32> = targets
            .iter()
            .flat_map(|t| {
                let sum: f32 = t.iter().map(|p| p.max(0.0)).sum();
                (0..k).map(move |c| {
                    if sum > 0.0 {
                        t.get(c).copied().unwrap_or(0.0).max(0.0) / sum
                    } else {
                        1.0 / k as f32
                    }
                })
            })
            .collect();
        let n = rows.len().min(targets.len());
        let mut w = vec![0f32; k * dd];
        let mut velocity = vec![0f32; k * dd];
        let mut grad = vec![0f32; k * dd];
        let mut p = vec![0f32; k];
        for _ in 0..Self::EPOCHS {
            if n == 0 {
                break;
            }
            grad.iter_mut().for_each(|g| *g = 0.0);
            for i in 0..n {
                let x = &xs[i * dd..(i + 1) * dd];
                for (c, pc) in p.iter_mut().enumerate() {
                    *pc = dot(&w[c * dd..(c + 1) * dd], x);
                }
                softmax_in_place(&mut p);
                for c in 0..k {
                    let err = p[c] - ys[i * k + c];
                    if err != 0.0 {
                        for (g, xv) in grad[c * dd..(c + 1) * dd].iter_mut().zip(x) {
                            *g += err * xv;
                        }
                    }
                }
            }
            for ((wv, v), g) in w.iter_mut().zip(velocity.iter_mut()).zip(&grad) {
                *v = Self::MOMENTUM * *v - Self::RATE * (g / n as f32 + Self::L2 * *wv);
                *wv += *v;
            }
        }
        SoftmaxRegression { space, w }
    }

    /// Class probabilities for one row.
    pub fn probabilities(&self, row: &[f32]) -> Vec<f32> {
        let dd = self.space.d + 1;
        let x: Vec<f32> = row
            .iter()
            .map(|v| (v - self.space.lo) / self.space.width())
            .chain([1.0])
            .collect();
        let mut p: Vec<f32> = (0..self.space.k)
            .map(|c| dot(&self.w[c * dd..(c + 1) * dd], &x))
            .collect();
        softmax_in_place(&mut p);
        p
    }

    /// ∇ₓ log p_class(x) (in input units).
    pub fn log_prob_gradient(&self, row: &[f32], class: usize) -> Vec<f32> {
        let dd = self.space.d + 1;
        let p = self.probabilities(row);
        (0..self.space.d)
            .map(|j| {
                let expected: f32 = (0..self.space.k).map(|c| p[c] * self.w[c * dd + j]).sum();
                (self.w[class * dd + j] - expected) / self.space.width()
            })
            .collect()
    }
}

impl Classifier for SoftmaxRegression {
    fn class(&self, row: &[f32]) -> usize {
        argmax(&self.probabilities(row))
    }
}

/// The equation-solving attacker's model: log p_c − mean_c log p = w_c·x + b_c, solved by
/// least squares (normal equations, a tiny ridge) from the answers; tiny or zero
/// probabilities are clamped to 1e-6.
#[derive(Debug, Clone)]
pub struct LinearSoftmax {
    d: usize,
    k: usize,
    /// (d + 1) × k, bias row last.
    w: Vec<f64>,
}

impl LinearSoftmax {
    pub fn solve(space: Space, rows: &[Vec<f32>], answers: &[Vec<f32>]) -> Self {
        let (d, k) = (space.d, space.k);
        let n = d + 1;
        let mut ata = vec![0f64; n * n];
        let mut atb = vec![0f64; n * k];
        for (q, p) in rows.iter().zip(answers) {
            let l: Vec<f64> = (0..k)
                .map(|c| f64::from(p.get(c).copied().unwrap_or(0.0).max(1e-6)).ln())
                .collect();
            let mean = l.iter().sum::<f64>() / k as f64;
            let x: Vec<f64> = q.iter().map(|v| f64::from(*v)).chain([1.0]).collect();
            for i in 0..n {
                for j in 0..n {
                    ata[i * n + j] += x[i] * x[j];
                }
                for c in 0..k {
                    atb[i * k + c] += x[i] * (l[c] - mean);
                }
            }
        }
        for i in 0..n {
            ata[i * n + i] += 1e-6;
        }
        let w = solve(&mut ata, &mut atb, n, k);
        LinearSoftmax { d, k, w }
    }
}

impl Classifier for LinearSoftmax {
    fn class(&self, row: &[f32]) -> usize {
        let x: Vec<f64> = row.iter().map(|v| f64::from(*v)).chain([1.0]).collect();
        let scores: Vec<f32> = (0..self.k)
            .map(|c| {
                (0..=self.d)
                    .map(|i| x.get(i).copied().unwrap_or(0.0) * self.w[i * self.k + c])
                    .sum::<f64>() as f32
            })
            .collect();
        argmax(&scores)
    }
}

/// Gaussian elimination with partial pivoting: solves A X = B (A n×n, B n×m, row-major) in
/// place and returns X. A singular pivot yields non-finite entries, not a panic.
pub fn solve(a: &mut [f64], b: &mut [f64], n: usize, m: usize) -> Vec<f64> {
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap_or(col);
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
        }
        for k in 0..m {
            b.swap(col * m + k, pivot * m + k);
        }
        let p = a[col * n + col];
        for row in 0..n {
            if row == col {
                continue;
            }
            let f = a[row * n + col] / p;
            for k in 0..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            for k in 0..m {
                b[row * m + k] -= f * b[col * m + k];
            }
        }
    }
    (0..n * m).map(|i| b[i] / a[(i / m) * n + i / m]).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testkit::{self, DigitsMlp, Oracle};
    use super::*;

    fn natural() -> Vec<(Vec<f32>, usize)> {
        let (rows, labels) = testkit::holdout();
        rows.into_iter().zip(labels).collect()
    }

    /// Runs `attack` against the in-process model (full outputs); returns the transcript.
    fn drive(attack: &mut dyn Attack, mlp: &DigitsMlp) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (mut qs, mut ans) = (Vec::new(), Vec::new());
        while let Some(q) = attack.next_query() {
            let p = mlp.predict(&q);
            attack.answer(&q, &p);
            qs.push(q);
            ans.push(p);
            assert!(qs.len() <= 1000, "attack does not end");
        }
        (qs, ans)
    }

    #[test]
    fn a_substitute_trained_on_the_models_answers_agrees_with_it() {
        let mlp = DigitsMlp::load();
        let (rows, _) = testkit::holdout();
        let outs = testkit::outputs(&mlp, &rows);
        let labels: Vec<usize> = outs.iter().map(|o| argmax(o)).collect();
        let sub = SoftmaxRegression::train(Space::DIGITS, &rows[..180], &outs[..180]);
        let a = agreement(&sub, &rows[180..], &labels[180..]);
        assert!(a > 0.85, "{a}");
    }

    #[test]
    fn every_attack_ends_within_its_budget_and_stays_in_range() {
        let mlp = DigitsMlp::load();
        let natural = natural();
        for kind in AttackKind::ALL {
            let mut attack = kind.build(Space::DIGITS, &natural[..180], 1);
            let (qs, _) = drive(attack.as_mut(), &mlp);
            assert!(!qs.is_empty(), "{kind:?}");
            assert!(
                qs.iter()
                    .all(|q| q.len() == 64 && q.iter().all(|v| (0.0..=16.0).contains(v))),
                "{kind:?}"
            );
            eprintln!("{}: {} queries", kind.name(), qs.len());
        }
    }

    /// Equation solving on d + 1 in-distribution rows copies much of the (nonlinear) model on
    /// held-out rows from full outputs. On d + 1 random rows it does not: a linear model
    /// interpolating the MLP's log-odds at random points extrapolates badly (printed only).
    #[test]
    fn equation_solving_recovers_much_of_the_model_from_full_outputs() {
        let mlp = DigitsMlp::load();
        let natural = natural();
        let (rows, _) = testkit::holdout();
        let random = uniform_rows(Space::DIGITS, 500, 99);
        let labels = |rows: &[Vec<f32>]| -> Vec<usize> {
            rows.iter().map(|r| argmax(&mlp.predict(r))).collect()
        };
        let mut results = Vec::new();
        for kind in [
            AttackKind::EquationRandom,
            AttackKind::EquationInDistribution,
        ] {
            let mut attack = kind.build(Space::DIGITS, &natural[..180], 3);
            let (qs, ans) = drive(attack.as_mut(), &mlp);
            assert_eq!(qs.len(), 65);
            let sub = attack.substitute(&qs, &ans);
            let on_random = agreement(sub.as_ref(), &random, &labels(&random));
            let on_holdout = agreement(sub.as_ref(), &rows[180..], &labels(&rows[180..]));
            eprintln!(
                "{}: random rows {on_random:.3}, held-out {on_holdout:.3}",
                kind.name()
            );
            results.push((on_random, on_holdout));
        }
        assert!(results[1].1 > 0.5, "{results:?}");
    }

    /// Without a gateway the augmentation rounds improve the substitute over its seed set
    /// (so "detected before it gains 2 points" is a real bar).
    #[test]
    fn jacobian_augmentation_improves_the_substitute_without_a_gateway() {
        let mlp = DigitsMlp::load();
        let natural = natural();
        let (rows, _) = testkit::holdout();
        let labels: Vec<usize> = rows[180..]
            .iter()
            .map(|r| argmax(&mlp.predict(r)))
            .collect();
        let mut gains = Vec::new();
        for seed in 1..4 {
            let mut attack = AttackKind::Jacobian.build(Space::DIGITS, &natural[..180], seed);
            let (qs, ans) = drive(attack.as_mut(), &mlp);
            let seeds = AttackKind::Jacobian.seed_queries(Space::DIGITS);
            let at = |n: usize| {
                agreement(
                    attack.substitute(&qs[..n], &ans[..n]).as_ref(),
                    &rows[180..],
                    &labels,
                )
            };
            let (before, after) = (at(seeds), at(qs.len()));
            eprintln!(
                "seed {seed}: seed set {before:.3}, after {} queries {after:.3}",
                qs.len()
            );
            gains.push(after - before);
        }
        let mean = gains.iter().sum::<f64>() / gains.len() as f64;
        assert!(mean > 0.01, "{gains:?}");
    }
}
