//! The one-pass parsing machinery the checks share: a problem collector with limits, JSON
//! pointers built only when a problem is reported, a strict `serde_json::Value` builder, and
//! the walker that streams tensor data (flat or nested) straight into typed vectors.
//!
//! Every visitor here accepts any JSON type: a value of the wrong type is reported as a
//! problem with its pointer and skipped, so one pass collects several problems. Only a hard
//! limit (elements, string length, duplicate key) aborts the parse.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ValidationLimits as Limits;
use super::contract::Datatype;
use super::v2::TensorData;
use crate::json_limits::check_depth;
use crate::{Code, Denial, ErrorDetail};

mod scan;
pub(crate) use scan::Scanner;

/// Longest object key echoed into a pointer or message; longer keys are cut (with `…`).
const MAX_ECHO: usize = 128;

/// Problems found so far, the hard-limit refusal (if any) and the element budget.
#[derive(Debug)]
pub(crate) struct Ctx<'l> {
    pub limits: &'l Limits,
    details: Vec<ErrorDetail>,
    problems: usize,
    fatal: Option<Denial>,
    elements: usize,
    /// Elements that may still be reserved up front: bounded by the body size, so declared
    /// shapes cannot make the parser allocate more than the body could fill.
    reserve: usize,
}

impl<'l> Ctx<'l> {
    pub fn new(limits: &'l Limits) -> Self {
        Ctx {
            limits,
            details: Vec::new(),
            problems: 0,
            fatal: None,
            elements: 0,
            reserve: 0,
        }
    }

    /// Sets the reservation budget for a body of `len` bytes: every element takes at least
    /// two bytes of JSON (`0,`).
    pub fn budget(&mut self, len: usize) {
        self.reserve = len / 2 + 1;
    }

    /// The state to return to should a fast path give up.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            details: self.details.len(),
            problems: self.problems,
            elements: self.elements,
            reserve: self.reserve,
            fatal: self.fatal.is_some(),
        }
    }

    /// Forgets everything recorded since `to` was taken.
    pub fn rollback(&mut self, to: Checkpoint) {
        self.details.truncate(to.details);
        self.problems = to.problems;
        self.elements = to.elements;
        self.reserve = to.reserve;
        if !to.fatal {
            self.fatal = None;
        }
    }

    /// How many of `want` elements to reserve now, taken from the body-size budget.
    pub fn take_reserve(&mut self, want: usize) -> usize {
        let n = want.min(self.reserve);
        self.reserve -= n;
        n
    }

    /// Records a contract problem; the pointer and message are built only while under the
    /// cap. The same problem at the same pointer (e.g. a batch size shared by every input of
    /// a row-format body) is listed and counted once.
    pub fn problem_with(&mut self, at: impl FnOnce() -> String, message: impl FnOnce() -> String) {
        if self.details.len() >= self.limits.max_errors {
            self.problems += 1;
            return;
        }
        let detail = ErrorDetail {
            path: at(),
            message: message(),
        };
        if !self.details.contains(&detail) {
            self.problems += 1;
            self.details.push(detail);
        }
    }

    /// Like [`Ctx::problem_with`] with a ready message.
    pub fn problem(&mut self, at: impl FnOnce() -> String, message: impl Into<String>) {
        self.problem_with(at, || message.into());
    }

    /// How many problems were recorded (including those past the detail cap).
    pub fn problems(&self) -> usize {
        self.problems
    }

    /// Aborts the parse with `denial` (the first one wins); returns the error to propagate.
    pub fn abort<E: de::Error>(&mut self, denial: Denial) -> E {
        if self.fatal.is_none() {
            self.fatal = Some(denial);
        }
        E::custom("request refused")
    }

    /// Counts one array element or object member against `max_elements`.
    #[inline]
    pub fn element<E: de::Error>(&mut self, at: impl FnOnce() -> String) -> Result<(), E> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            let max = self.limits.max_elements;
            return Err(self.abort(
                Denial::new(
                    Code::PayloadTooLarge,
                    format!("request has more than {max} array elements"),
                )
                .with_details(vec![detail(at(), "element limit reached here")]),
            ));
        }
        Ok(())
    }

    /// How many more elements `max_elements` allows: a fast path that gives up past it
    /// counts a run of elements at once ([`Ctx::count_elements`]).
    pub fn elements_left(&self) -> usize {
        self.limits.max_elements.saturating_sub(self.elements)
    }

    /// Counts `n` elements, at most [`Ctx::elements_left`].
    pub fn count_elements(&mut self, n: usize) {
        self.elements += n;
    }

    /// Counts `n` declared elements at once (a shape's product) against `max_elements`.
    pub fn declared<E: de::Error>(
        &mut self,
        n: usize,
        at: impl FnOnce() -> String,
    ) -> Result<(), E> {
        if n > self.limits.max_elements {
            let max = self.limits.max_elements;
            return Err(self.abort(
                Denial::new(
                    Code::PayloadTooLarge,
                    format!("shape declares {n} elements; the limit is {max}"),
                )
                .with_details(vec![detail(at(), "too many elements")]),
            ));
        }
        Ok(())
    }

    /// Refuses a string longer than `max_string_bytes`.
    #[inline]
    pub fn string<E: de::Error>(
        &mut self,
        len: usize,
        at: impl FnOnce() -> String,
    ) -> Result<(), E> {
        if len > self.limits.max_string_bytes {
            let max = self.limits.max_string_bytes;
            return Err(self.abort(
                Denial::new(
                    Code::PayloadTooLarge,
                    format!("a string is longer than {max} bytes"),
                )
                .with_details(vec![detail(at(), format!("{len} bytes"))]),
            ));
        }
        Ok(())
    }

    /// Refuses a repeated object key (400): the document would mean different things to
    /// different parsers.
    pub fn duplicate<E: de::Error>(&mut self, at: String) -> E {
        self.abort(
            Denial::new(Code::InvalidJson, "duplicate object key").with_details(vec![detail(
                at,
                "this key appears more than once in its object",
            )]),
        )
    }

    /// `Ok` if nothing was found, else the 422 listing the problems.
    pub fn finish(self, what: &str) -> Result<(), Denial> {
        if self.problems == 0 {
            return Ok(());
        }
        Err(self.into_denial(what))
    }

    /// The 422 listing the problems found (call only when there are some).
    pub fn into_denial(self, what: &str) -> Denial {
        let shown = self.details.len();
        let message = match self.problems {
            1 => format!("{what}: 1 problem"),
            n if n > shown => format!("{what}: {n} problems (first {shown} listed)"),
            n => format!("{what}: {n} problems"),
        };
        Denial::new(Code::InvalidInput, message).with_details(self.details)
    }
}

/// What [`Ctx::rollback`] restores.
pub(crate) struct Checkpoint {
    details: usize,
    problems: usize,
    elements: usize,
    reserve: usize,
    fatal: bool,
}

/// One `ErrorDetail`.
pub(crate) fn detail(path: String, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        path,
        message: message.into(),
    }
}

/// Runs one parse over `body`: depth pre-check, the seed, then trailing-bytes check. A parse
/// error becomes the recorded hard-limit refusal if any, else 400 `invalid_json`.
pub(crate) fn run<'de, T>(
    body: &'de [u8],
    ctx: &mut Ctx<'_>,
    parse: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
        &mut Ctx<'_>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, Denial> {
    check_depth(body, ctx.limits.max_depth)?;
    ctx.budget(body.len());
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = parse(&mut de, ctx).and_then(|v| de.end().map(|()| v));
    out.map_err(|e| ctx.fatal.take().unwrap_or_else(|| invalid_json(&e)))
}

/// 400 for a body serde_json cannot read. The message names the problem and its position;
/// it never echoes the body.
pub(crate) fn invalid_json(e: &serde_json::Error) -> Denial {
    use serde_json::error::Category;
    let message = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("body is not valid JSON: {e}"),
        Category::Data => format!(
            "body is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ),
    };
    Denial::new(Code::InvalidJson, message)
}

/// A location in the document as a chain of stack frames; rendered only on demand.
#[derive(Clone, Copy)]
pub(crate) struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    seg: Seg<'p>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Root,
    Raw(&'p str),
    Key(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    pub const ROOT: Path<'static> = Path {
        parent: None,
        seg: Seg::Root,
    };

    /// A root that is already a rendered pointer.
    pub fn raw(pointer: &'p str) -> Path<'p> {
        Path {
            parent: None,
            seg: Seg::Raw(pointer),
        }
    }

    pub fn key<'c>(&'c self, key: &'c str) -> Path<'c> {
        Path {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    pub fn index<'c>(&'c self, i: usize) -> Path<'c> {
        Path {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    /// The RFC 6901 JSON pointer (`""` for the root).
    pub fn pointer(&self) -> String {
        let mut segs = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            segs.push(p.seg);
            at = p.parent;
        }
        let mut out = String::new();
        for seg in segs.iter().rev() {
            match seg {
                Seg::Root => {}
                Seg::Raw(p) => out.push_str(p),
                Seg::Key(k) => push_key(&mut out, k),
                Seg::Index(i) => {
                    let _ = write!(out, "/{i}");
                }
            }
        }
        out
    }
}

/// Appends `/key` with `~` and `/` escaped, cutting keys longer than [`MAX_ECHO`].
pub(crate) fn push_key(out: &mut String, key: &str) {
    out.push('/');
    for c in echo(key).chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// A client-supplied name as it may appear in a message: at most [`MAX_ECHO`] bytes.
pub(crate) fn echo(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_ECHO {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// Reads an object key, borrowed when it has no escapes.
pub(crate) struct Key<'a, 'l, 'p> {
    pub ctx: &'a mut Ctx<'l>,
    pub at: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_, '_> {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_, '_> {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.key(v).pointer())?;
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.key(v).pointer())?;
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// Skips a value of any type while still enforcing the limits (elements, string length,
/// duplicate keys) inside it.
pub(crate) struct Drain<'a, 'l, 'p> {
    pub ctx: &'a mut Ctx<'l>,
    pub at: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for Drain<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Drain<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.pointer())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        drain_seq(self.ctx, self.at, &mut seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        drain_map(self.ctx, self.at, &mut map)
    }
}

/// Drains the rest of an array.
pub(crate) fn drain_seq<'de, A: SeqAccess<'de>>(
    ctx: &mut Ctx<'_>,
    at: Path<'_>,
    seq: &mut A,
) -> Result<(), A::Error> {
    let mut i = 0;
    loop {
        let here = at.index(i);
        if seq.next_element_seed(Drain { ctx, at: here })?.is_none() {
            return Ok(());
        }
        ctx.element(|| here.pointer())?;
        i += 1;
    }
}

/// Drains the rest of an object, refusing duplicate keys.
pub(crate) fn drain_map<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx<'_>,
    at: Path<'_>,
    map: &mut A,
) -> Result<(), A::Error> {
    let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
    while let Some(k) = map.next_key_seed(Key { ctx, at })? {
        let here = at.key(&k);
        if seen.contains(&k) {
            return Err(ctx.duplicate(here.pointer()));
        }
        map.next_value_seed(Drain { ctx, at: here })?;
        ctx.element(|| here.pointer())?;
        seen.insert(k);
    }
    Ok(())
}

/// Builds a `serde_json::Value` under the limits, refusing duplicate keys.
pub(crate) struct ValueSeed<'a, 'l, 'p> {
    pub ctx: &'a mut Ctx<'l>,
    pub at: Path<'p>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.pointer())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let here = self.at.index(out.len());
            let seed = ValueSeed {
                ctx: &mut *self.ctx,
                at: here,
            };
            let Some(v) = seq.next_element_seed(seed)? else {
                return Ok(Value::Array(out));
            };
            self.ctx.element(|| here.pointer())?;
            out.push(v);
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let at = self.at;
        while let Some(k) = map.next_key_seed(Key {
            ctx: &mut *self.ctx,
            at,
        })? {
            let here = at.key(&k);
            if out.contains_key(k.as_ref()) {
                return Err(self.ctx.duplicate(here.pointer()));
            }
            let v = map.next_value_seed(ValueSeed {
                ctx: &mut *self.ctx,
                at: here,
            })?;
            self.ctx.element(|| here.pointer())?;
            out.insert(k.into_owned(), v);
        }
        Ok(Value::Object(out))
    }
}

/// Where a tensor's data sits in the document, for pointers to its elements.
#[derive(Clone, Copy)]
pub(crate) enum Base<'a> {
    /// `/inputs/{input}/data/...` (KServe v2).
    V2 { input: usize },
    /// `/instances/{row}[/{key}]/...` (TF Serving row format).
    Instances { key: Option<&'a str> },
    /// `/inputs[/{key}]/...` (TF Serving columnar format).
    Columns { key: Option<&'a str> },
}

/// The pointer to the element at `idx` (row-major indices) under `base`.
pub(crate) fn data_pointer(base: Base<'_>, idx: &[usize]) -> String {
    let mut out = String::new();
    let mut rest = idx;
    match base {
        Base::V2 { input } => {
            let _ = write!(out, "/inputs/{input}/data");
        }
        Base::Instances { key } => {
            out.push_str("/instances");
            if let Some((row, tail)) = idx.split_first() {
                let _ = write!(out, "/{row}");
                rest = tail;
            }
            if let Some(k) = key {
                push_key(&mut out, k);
            }
        }
        Base::Columns { key } => {
            out.push_str("/inputs");
            if let Some(k) = key {
                push_key(&mut out, k);
            }
        }
    }
    for i in rest {
        let _ = write!(out, "/{i}");
    }
    out
}

/// Row-major indices of flat element `flat` in an array nested as `levels`.
pub(crate) fn unflatten(mut flat: usize, levels: &[usize]) -> Vec<usize> {
    if levels.len() <= 1 {
        return vec![flat];
    }
    let mut idx = vec![0; levels.len()];
    for (slot, &n) in idx.iter_mut().zip(levels).rev() {
        if n > 0 {
            *slot = flat % n;
            flat /= n;
        }
    }
    idx
}

/// A JSON leaf value on its way into a tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'s> {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(&'s str),
    /// A TF-Serving `{"b64": ...}` binary string, decoded.
    Bin(&'s [u8]),
}

/// A leaf kept until the datatype is known (the `data` key came before `datatype`).
#[derive(Debug, Clone)]
pub(crate) enum OwnedScalar {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(Box<str>),
    Bin(Box<[u8]>),
}

impl OwnedScalar {
    fn borrow(&self) -> Scalar<'_> {
        match self {
            OwnedScalar::U(v) => Scalar::U(*v),
            OwnedScalar::I(v) => Scalar::I(*v),
            OwnedScalar::F(v) => Scalar::F(*v),
            OwnedScalar::B(v) => Scalar::B(*v),
            OwnedScalar::S(v) => Scalar::S(v),
            OwnedScalar::Bin(v) => Scalar::Bin(v),
        }
    }
}

/// Why one value does not fit its datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueError {
    NotNumber,
    NotInteger,
    OutOfRange,
    NotBool,
    NotString,
    NotFinite,
}

impl ValueError {
    pub fn message(self, dt: Datatype) -> String {
        match self {
            ValueError::NotNumber => format!("{dt} data must be numbers"),
            ValueError::NotInteger => format!("{dt} data must be JSON integers"),
            ValueError::OutOfRange => format!("value is out of the {dt} range"),
            ValueError::NotBool => "BOOL data must be true or false".into(),
            ValueError::NotString => "BYTES data must be strings".into(),
            ValueError::NotFinite => format!("{dt} data must be finite"),
        }
    }
}

pub(crate) fn float(v: Scalar<'_>) -> Result<f64, ValueError> {
    match v {
        Scalar::F(f) if !f.is_finite() => Err(ValueError::NotFinite),
        Scalar::F(f) => Ok(f),
        Scalar::U(u) => Ok(u as f64),
        Scalar::I(i) => Ok(i as f64),
        Scalar::B(_) | Scalar::S(_) | Scalar::Bin(_) => Err(ValueError::NotNumber),
    }
}

fn int(v: Scalar<'_>, dt: Datatype) -> Result<i128, ValueError> {
    let n = match v {
        Scalar::U(u) => i128::from(u),
        Scalar::I(i) => i128::from(i),
        // serde_json hands integers beyond u64/i64 over as floats.
        Scalar::F(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => {
            return Err(ValueError::OutOfRange);
        }
        Scalar::F(_) => return Err(ValueError::NotInteger),
        Scalar::B(_) | Scalar::S(_) | Scalar::Bin(_) => return Err(ValueError::NotNumber),
    };
    match dt.int_range() {
        Some((lo, hi)) if n >= lo && n <= hi => Ok(n),
        _ => Err(ValueError::OutOfRange),
    }
}

/// Largest finite FP16 value.
pub(crate) const FP16_MAX: f64 = 65504.0;

/// Appends `v` to `data` (whose variant matches `dt`) if it is a value of `dt`.
#[inline(always)]
pub(crate) fn push(data: &mut TensorData, dt: Datatype, v: Scalar<'_>) -> Result<(), ValueError> {
    match data {
        TensorData::F32(out) => out.push(f32_value(dt, v)?),
        TensorData::F64(out) => out.push(float(v)?),
        TensorData::I64(out) => out.push(i64_value(dt, v)?),
        TensorData::U64(out) => out.push(u64_value(dt, v)?),
        TensorData::Bool(out) => match v {
            Scalar::B(b) => out.push(b),
            _ => return Err(ValueError::NotBool),
        },
        TensorData::Bytes(out) => match v {
            Scalar::S(s) => out.push(s.as_bytes().to_vec()),
            Scalar::Bin(b) => out.push(b.to_vec()),
            _ => return Err(ValueError::NotString),
        },
    }
    Ok(())
}

/// `v` as an element of an FP32 (or FP16) tensor.
#[inline(always)]
pub(crate) fn f32_value(dt: Datatype, v: Scalar<'_>) -> Result<f32, ValueError> {
    let f = float(v)?;
    let x = f as f32;
    let fits = match dt {
        Datatype::Fp16 => f.abs() <= FP16_MAX,
        _ => x.is_finite(),
    };
    if fits {
        Ok(x)
    } else {
        Err(ValueError::OutOfRange)
    }
}

/// `v` as an element of a signed integer tensor.
pub(crate) fn i64_value(dt: Datatype, v: Scalar<'_>) -> Result<i64, ValueError> {
    i64::try_from(int(v, dt)?).map_err(|_| ValueError::OutOfRange)
}

/// `v` as an element of an unsigned integer tensor.
pub(crate) fn u64_value(dt: Datatype, v: Scalar<'_>) -> Result<u64, ValueError> {
    u64::try_from(int(v, dt)?).map_err(|_| ValueError::OutOfRange)
}

/// Where streamed values go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Converted and checked as they arrive.
    Typed(Datatype, TensorData),
    /// Kept as parsed; converted once the datatype is known.
    Untyped(Vec<OwnedScalar>),
    /// Counted only (the datatype is invalid; the tensor is refused anyway).
    Discard,
}

/// Marks a depth whose array length is not known yet.
const UNSET: usize = usize::MAX;

/// A tensor's data as streamed: values, count and the nesting seen.
#[derive(Debug)]
pub(crate) struct Collected {
    pub sink: Sink,
    pub len: usize,
    /// Values refused while streaming (each replaced by a placeholder and reported).
    pub bad: usize,
    /// Length of the arrays at each depth (the first one seen).
    levels: Vec<usize>,
    leaf_depth: Option<usize>,
    ragged: bool,
}

impl Collected {
    pub fn new(sink: Sink) -> Self {
        Collected {
            sink,
            len: 0,
            bad: 0,
            levels: Vec::new(),
            leaf_depth: None,
            ragged: false,
        }
    }

    /// Already-decoded flat data (the binary extension).
    pub fn flat(dt: Datatype, data: TensorData) -> Self {
        let len = data.len();
        Collected {
            sink: Sink::Typed(dt, data),
            len,
            bad: 0,
            levels: vec![len],
            leaf_depth: Some(1),
            ragged: false,
        }
    }

    /// The regular shape the nesting describes (`[n]` for flat data, `[]` for a scalar), or
    /// `None` when arrays at one depth differ in length or leaves sit at different depths.
    pub fn nesting(&self) -> Option<&[usize]> {
        if self.ragged {
            return None;
        }
        let depth = self.leaf_depth.unwrap_or(self.levels.len());
        (self.levels.len() == depth && !self.levels.contains(&UNSET)).then_some(&self.levels[..])
    }

    /// Records that values sit at nesting `depth`; `false`, with the nesting marked ragged,
    /// when earlier values sat at another depth.
    fn leaf_at(&mut self, depth: usize) -> bool {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => {
                self.ragged = true;
                return false;
            }
            Some(_) => {}
        }
        true
    }

    fn record_level(&mut self, depth: usize, n: usize) {
        if self.levels.len() <= depth {
            self.levels.resize(depth + 1, UNSET);
        }
        let slot = &mut self.levels[depth];
        if *slot == UNSET {
            *slot = n;
        } else if *slot != n {
            self.ragged = true;
        }
    }

    /// Converts kept values once the datatype is known, reporting misfits at their pointers.
    /// `levels` is the verified nesting.
    pub fn convert(&mut self, dt: Datatype, ctx: &mut Ctx<'_>, base: Base<'_>, levels: &[usize]) {
        if !matches!(self.sink, Sink::Untyped(_)) {
            return;
        }
        let Sink::Untyped(vals) = std::mem::replace(&mut self.sink, Sink::Discard) else {
            return;
        };
        let mut data = TensorData::with_capacity(dt, vals.len());
        for (k, v) in vals.iter().enumerate() {
            if let Err(e) = push(&mut data, dt, v.borrow()) {
                data.push_default();
                ctx.problem(|| data_pointer(base, &unflatten(k, levels)), e.message(dt));
            }
        }
        self.sink = Sink::Typed(dt, data);
    }
}

/// Streams one tensor's data (any nesting) into a [`Collected`].
pub(crate) struct Walker<'a> {
    pub base: Base<'a>,
    pub col: Collected,
    /// Index of the element being visited at each open depth.
    pub path: Vec<usize>,
    /// Whether a bare scalar (rank 0) is acceptable at the root.
    pub scalar_root: bool,
}

impl<'a> Walker<'a> {
    pub fn new(base: Base<'a>, sink: Sink, scalar_root: bool) -> Self {
        Walker {
            base,
            col: Collected::new(sink),
            path: Vec::new(),
            scalar_root,
        }
    }

    /// Visits a value at the current depth.
    pub fn node<'w, 'c, 'l>(&'w mut self, ctx: &'c mut Ctx<'l>) -> Node<'w, 'a, 'c, 'l> {
        Node { w: self, ctx }
    }

    /// Sets the array length seen at `depth` (used for the row level of TF rows).
    pub fn set_level(&mut self, depth: usize, n: usize) {
        self.col.record_level(depth, n);
    }

    #[inline]
    fn leaf<E: de::Error>(&mut self, ctx: &mut Ctx<'_>, v: Scalar<'_>) -> Result<(), E> {
        let depth = self.path.len();
        let (base, path) = (self.base, &self.path);
        if depth == 0 && !self.scalar_root {
            ctx.problem(|| data_pointer(base, path), "must be an array");
            return Ok(());
        }
        self.col.leaf_at(depth);
        self.col.len += 1;
        match &mut self.col.sink {
            Sink::Typed(dt, data) => {
                if let Err(e) = push(data, *dt, v) {
                    data.push_default();
                    self.col.bad += 1;
                    ctx.problem(|| data_pointer(base, path), e.message(*dt));
                }
            }
            Sink::Untyped(vals) => vals.push(match v {
                Scalar::U(x) => OwnedScalar::U(x),
                Scalar::I(x) => OwnedScalar::I(x),
                Scalar::F(x) => OwnedScalar::F(x),
                Scalar::B(x) => OwnedScalar::B(x),
                Scalar::S(x) => OwnedScalar::S(x.into()),
                Scalar::Bin(x) => OwnedScalar::Bin(x.into()),
            }),
            Sink::Discard => {}
        }
        Ok(())
    }

    fn bad_leaf(&mut self, ctx: &mut Ctx<'_>, what: &str) {
        let (base, path) = (self.base, &self.path);
        ctx.problem(
            || data_pointer(base, path),
            format!("{what} cannot be a tensor element"),
        );
        // Keep the count honest so the shape check does not add a second, misleading problem.
        self.col.len += 1;
        self.col.bad += 1;
        if let Sink::Typed(_, data) = &mut self.col.sink {
            data.push_default();
        }
        if let Sink::Untyped(vals) = &mut self.col.sink {
            vals.push(OwnedScalar::B(false));
        }
    }

    /// Visits the elements of an array at the current depth.
    pub fn seq<'de, A: SeqAccess<'de>>(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut seq: A,
    ) -> Result<(), A::Error> {
        let depth = self.path.len();
        self.path.push(0);
        let mut n = 0;
        while seq.next_element_seed(Node { w: self, ctx })?.is_some() {
            n += 1;
            if let Some(last) = self.path.last_mut() {
                *last = n;
            }
        }
        self.path.pop();
        self.col.record_level(depth, n);
        Ok(())
    }
}

/// Seed/visitor for one value inside tensor data.
pub(crate) struct Node<'w, 'a, 'c, 'l> {
    w: &'w mut Walker<'a>,
    ctx: &'c mut Ctx<'l>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, '_, '_> {
    type Value = ();
    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let (base, path) = (self.w.base, &self.w.path);
        self.ctx.element(|| data_pointer(base, path))?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.w.leaf(self.ctx, Scalar::B(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.w.leaf(self.ctx, Scalar::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.w.leaf(self.ctx, Scalar::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.w.leaf(self.ctx, Scalar::F(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let (base, path) = (self.w.base, &self.w.path);
        self.ctx.string(v.len(), || data_pointer(base, path))?;
        self.w.leaf(self.ctx, Scalar::S(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.w.bad_leaf(self.ctx, "null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.w.seq(self.ctx, seq)
    }
    /// Objects are not tensor elements, except TF-Serving's `{"b64": "<base64>"}` binary
    /// string in a TF-Serving body.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = data_pointer(self.w.base, &self.w.path);
        if matches!(self.w.base, Base::V2 { .. }) {
            drain_map(self.ctx, Path::raw(&at), &mut map)?;
            self.w.bad_leaf(self.ctx, "an object");
            return Ok(());
        }
        let mut encoded: Option<String> = None;
        let mut other = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "b64" && encoded.is_none() {
                match map.next_value::<Value>()? {
                    Value::String(s) => {
                        self.ctx.string(s.len(), || at.clone())?;
                        encoded = Some(s);
                    }
                    _ => other = true,
                }
            } else {
                map.next_value_seed(Drain {
                    ctx: self.ctx,
                    at: Path::raw(&at),
                })?;
                other = true;
            }
        }
        match encoded
            .filter(|_| !other)
            .map(|e| base64::Engine::decode(&B64, e))
        {
            Some(Ok(bytes)) => self.w.leaf(self.ctx, Scalar::Bin(&bytes)),
            Some(Err(_)) => {
                self.w
                    .bad_leaf(self.ctx, "invalid base64 in {\"b64\": ...}: it");
                Ok(())
            }
            None => {
                self.w
                    .bad_leaf(self.ctx, "an object other than {\"b64\": \"<base64>\"}");
                Ok(())
            }
        }
    }
}

/// TF-Serving's base64: the standard alphabet, padding optional.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Generates the visitor methods for JSON types a field does not accept: each drains the
/// value, then calls `self.mismatch()`, which records the problem and returns the fallback.
macro_rules! otherwise {
    ($de:lifetime; $($kind:ident),*) => { $( $crate::schema::parse::otherwise!(@ $de $kind); )* };
    (@ $de:lifetime bool) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime i64) => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime u64) => {
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime f64) => {
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime str) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime unit) => {
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> { Ok(self.mismatch()) }
    };
    (@ $de:lifetime seq) => {
        fn visit_seq<A: serde::de::SeqAccess<$de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            $crate::schema::parse::drain_seq(&mut *self.ctx, self.at, &mut seq)?;
            Ok(self.mismatch())
        }
    };
    (@ $de:lifetime map) => {
        fn visit_map<A: serde::de::MapAccess<$de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            $crate::schema::parse::drain_map(&mut *self.ctx, self.at, &mut map)?;
            Ok(self.mismatch())
        }
    };
}
pub(crate) use otherwise;

/// Parses `body` into a `serde_json::Value` under `limits`.
pub(crate) fn parse_value(body: &[u8], limits: &Limits) -> Result<Value, Denial> {
    let mut ctx = Ctx::new(limits);
    run(body, &mut ctx, |de, ctx| {
        ValueSeed {
            ctx,
            at: Path::ROOT,
        }
        .deserialize(de)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_keys_and_unflatten_row_major() {
        let root = Path::ROOT;
        let a = root.key("a/b~c");
        let i = a.index(3);
        assert_eq!(i.pointer(), "/a~1b~0c/3");
        assert_eq!(Path::ROOT.pointer(), "");
        assert_eq!(unflatten(130, &[130 + 62]), vec![130]);
        assert_eq!(unflatten(130, &[3, 64]), vec![2, 2]);
        assert_eq!(unflatten(5, &[2, 2, 2]), vec![1, 0, 1]);
        assert_eq!(
            data_pointer(Base::Instances { key: Some("x") }, &[4, 1]),
            "/instances/4/x/1"
        );
        assert_eq!(
            data_pointer(Base::Columns { key: None }, &[0, 2]),
            "/inputs/0/2"
        );
        let long = "k".repeat(500);
        assert!(echo(&long).len() < 200);
    }

    #[test]
    fn value_parser_refuses_duplicates_and_long_strings() {
        let limits = Limits::default();
        let v = parse_value(br#"{"a":[1,{"b":null}],"c":"x"}"#, &limits).unwrap();
        assert_eq!(v["a"][1]["b"], Value::Null);
        let e = parse_value(br#"{"a":{"b":1,"b":2}}"#, &limits).unwrap_err();
        assert_eq!(e.code, Code::InvalidJson);
        assert_eq!(e.details[0].path, "/a/b");
        let small = Limits {
            max_string_bytes: 3,
            ..Limits::default()
        };
        let e = parse_value(br#"{"a":["abcd"]}"#, &small).unwrap_err();
        assert_eq!(
            (e.code, e.details[0].path.as_str()),
            (Code::PayloadTooLarge, "/a/0")
        );
        let few = Limits {
            max_elements: 3,
            ..Limits::default()
        };
        let e = parse_value(b"[1,2,3,4]", &few).unwrap_err();
        assert_eq!(
            (e.code, e.details[0].path.as_str()),
            (Code::PayloadTooLarge, "/3")
        );
    }
}
