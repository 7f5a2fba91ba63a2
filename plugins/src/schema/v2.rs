//! Open Inference Protocol (KServe v2) infer requests, checked against a [`ModelContract`] in
//! one parse: tensor data streams straight into typed vectors, no `Value` tree.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ValidationLimits;
use super::contract::{Datatype, MAX_RANK, ModelContract, TensorSpec};
use super::parse::{
    Base, Collected, Ctx, Drain, Key, Path, Sink, Walker, data_pointer, echo, otherwise, run,
    unflatten,
};
use crate::Denial;

mod fast;
mod response;

pub use response::V2Response;

/// A tensor's values, typed by datatype family: `F32` holds FP32 and FP16, `I64` the signed
/// integers, `U64` the unsigned ones, `Bytes` the BYTES elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of the family `dt` belongs to.
    pub(crate) fn with_capacity(dt: Datatype, n: usize) -> Self {
        match dt {
            Datatype::Fp16 | Datatype::Fp32 => TensorData::F32(Vec::with_capacity(n)),
            Datatype::Fp64 => TensorData::F64(Vec::with_capacity(n)),
            Datatype::Int8 | Datatype::Int16 | Datatype::Int32 | Datatype::Int64 => {
                TensorData::I64(Vec::with_capacity(n))
            }
            Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 | Datatype::Uint64 => {
                TensorData::U64(Vec::with_capacity(n))
            }
            Datatype::Bool => TensorData::Bool(Vec::with_capacity(n)),
            Datatype::Bytes => TensorData::Bytes(Vec::with_capacity(n)),
        }
    }

    /// Appends a zero/false/empty placeholder (keeps counts right after a refused value).
    pub(crate) fn push_default(&mut self) {
        match self {
            TensorData::F32(v) => v.push(0.0),
            TensorData::F64(v) => v.push(0.0),
            TensorData::I64(v) => v.push(0),
            TensorData::U64(v) => v.push(0),
            TensorData::Bool(v) => v.push(false),
            TensorData::Bytes(v) => v.push(Vec::new()),
        }
    }
}

/// One input that passed every check: its datatype and shape are the contract's, and `data`
/// holds exactly `product(shape)` row-major values of that datatype.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedTensor {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl ValidatedTensor {
    /// The values as `f32` when the datatype is FP32 or FP16.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// A request that passed every check, parsed once for every later stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    /// The client's request id, if any.
    pub id: Option<String>,
    /// Rows in the request (the first dimension when the model batches, else 1): the
    /// request's cost for rate limiting. Never above the model's `max_batch_size`.
    pub batch: usize,
    /// One tensor per contract input, in the contract's order.
    pub inputs: Vec<ValidatedTensor>,
    /// Outputs the client asked for, in its order; empty means all.
    pub outputs: Vec<String>,
}

impl ValidatedRequest {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&ValidatedTensor> {
        self.inputs.iter().find(|t| t.name == name)
    }
}

/// Parses a KServe v2 JSON infer request and checks it against `contract`: every input
/// present once by name and no other, datatype, rank and fixed dimensions, batch size
/// (1..=`max_batch_size`, equal across inputs), `product(shape)` equal to the number of
/// values (data flat, or nested exactly as the shape), each value of the datatype, the
/// feature range, requested outputs known, `id` a string, `parameters` objects.
/// Refusals: see the [module docs](super).
pub fn validate_v2(
    body: &[u8],
    contract: &ModelContract,
    limits: &ValidationLimits,
) -> Result<ValidatedRequest, Denial> {
    let mut ctx = Ctx::new(limits);
    let raw = parse_request(body, contract, &mut ctx)?;
    let request = check_request(&mut ctx, contract, raw);
    ctx.finish("request does not match the model's inputs")?;
    Ok(request)
}

/// Fields of the request object.
const REQUEST_FIELDS: [&str; 6] = [
    "id",
    "parameters",
    "inputs",
    "outputs",
    "model_name",
    "model_version",
];
/// Fields of an input tensor object.
const TENSOR_FIELDS: [&str; 5] = ["name", "shape", "datatype", "parameters", "data"];
/// Fields of a requested output object.
const OUTPUT_FIELDS: [&str; 2] = ["name", "parameters"];

/// A request as parsed, before the contract checks.
#[derive(Debug, Default)]
pub(crate) struct RawRequest {
    pub id: Option<String>,
    /// `None`: missing (`given` false) or not an array (problem recorded).
    pub inputs: Option<Vec<RawTensor>>,
    pub inputs_given: bool,
    pub outputs: Vec<(usize, Option<String>)>,
    /// The body was not an object (problem recorded).
    pub not_object: bool,
}

/// One input tensor as parsed.
#[derive(Debug)]
pub(crate) struct RawTensor {
    pub index: usize,
    pub name: Option<String>,
    pub shape: Option<Vec<usize>>,
    pub datatype: Option<Datatype>,
    pub data: Option<Collected>,
    pub binary_size: Option<u64>,
    /// Fields present (bit per [`TENSOR_FIELDS`] entry).
    seen: u32,
    /// Not an object (problem recorded).
    malformed: bool,
    /// Problems were recorded while parsing it; its data is not checked further.
    pub faulty: bool,
}

impl RawTensor {
    fn new(index: usize) -> Self {
        RawTensor {
            index,
            name: None,
            shape: None,
            datatype: None,
            data: None,
            binary_size: None,
            seen: 0,
            malformed: false,
            faulty: false,
        }
    }

    fn given(&self, field: usize) -> bool {
        self.seen & (1 << field) != 0
    }

    /// The declared element count, when the shape is valid.
    pub fn product(&self) -> Option<usize> {
        product(self.shape.as_deref()?)
    }
}

fn product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Parses the request object (also the JSON header of a binary-extension request, whose
/// inputs may carry `parameters.binary_data_size` instead of `data`).
pub(crate) fn parse_request(
    body: &[u8],
    contract: &ModelContract,
    ctx: &mut Ctx<'_>,
) -> Result<RawRequest, Denial> {
    match fast::parse_request(body, contract, ctx) {
        Some(raw) => Ok(raw),
        None => parse_request_serde(body, contract, ctx),
    }
}

/// [`parse_request`] through serde: every request, every problem reported.
fn parse_request_serde(
    body: &[u8],
    contract: &ModelContract,
    ctx: &mut Ctx<'_>,
) -> Result<RawRequest, Denial> {
    run(body, ctx, |de, ctx| {
        RequestSeed {
            ctx,
            at: Path::ROOT,
            contract,
        }
        .deserialize(de)
    })
}

/// Calls `value` for each known field (index into `known`), refusing repeated keys (400) and
/// reporting unknown ones (422). Returns the bitmask of fields seen.
pub(crate) fn each_field<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx<'_>,
    at: Path<'_>,
    map: &mut A,
    known: &[&str],
    mut value: impl FnMut(&mut Ctx<'_>, &mut A, usize) -> Result<(), A::Error>,
) -> Result<u32, A::Error> {
    let mut seen = 0u32;
    while let Some(k) = map.next_key_seed(Key { ctx, at })? {
        let here = at.key(&k);
        match known.iter().position(|n| *n == k) {
            Some(i) => {
                if seen & (1 << i) != 0 {
                    return Err(ctx.duplicate(here.pointer()));
                }
                seen |= 1 << i;
                value(ctx, map, i)?;
            }
            None => {
                ctx.problem(|| here.pointer(), "unknown field");
                map.next_value_seed(Drain { ctx, at: here })?;
            }
        }
    }
    Ok(seen)
}

struct RequestSeed<'a, 'l, 'p, 'c> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
    contract: &'c ModelContract,
}

impl RequestSeed<'_, '_, '_, '_> {
    fn mismatch(self) -> RawRequest {
        self.ctx
            .problem(String::new, "the request must be a JSON object");
        RawRequest {
            not_object: true,
            ..RawRequest::default()
        }
    }
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_, '_, '_> {
    type Value = RawRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawRequest, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_, '_, '_> {
    type Value = RawRequest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
        let RequestSeed { ctx, at, contract } = self;
        let mut out = RawRequest::default();
        each_field(ctx, at, &mut map, &REQUEST_FIELDS, |ctx, map, f| {
            let here = at.key(REQUEST_FIELDS[f]);
            match f {
                0 => out.id = map.next_value_seed(StrField { ctx, at: here })?,
                1 => map
                    .next_value_seed(ParamsField {
                        ctx,
                        at: here,
                        binary_size: false,
                    })
                    .map(drop)?,
                2 => {
                    out.inputs_given = true;
                    out.inputs = map.next_value_seed(InputsField {
                        ctx,
                        at: here,
                        contract,
                    })?;
                }
                3 => out.outputs = map.next_value_seed(OutputsField { ctx, at: here })?,
                _ => map.next_value_seed(StrField { ctx, at: here }).map(drop)?,
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// A string field; anything else is a problem (`None`).
struct StrField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl StrField<'_, '_, '_> {
    fn mismatch(self) -> Option<String> {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be a string");
        None
    }
}

impl<'de> DeserializeSeed<'de> for StrField<'_, '_, '_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrField<'_, '_, '_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    otherwise!('de; bool, i64, u64, f64, unit, seq, map);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.pointer())?;
        Ok(Some(v.to_owned()))
    }
}

/// A `parameters` object; with `binary_size`, reads `binary_data_size` from it.
struct ParamsField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
    binary_size: bool,
}

impl ParamsField<'_, '_, '_> {
    fn mismatch(self) -> Option<u64> {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be an object");
        None
    }
}

impl<'de> DeserializeSeed<'de> for ParamsField<'_, '_, '_> {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsField<'_, '_, '_> {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, seq);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ParamsField {
            ctx,
            at,
            binary_size,
        } = self;
        let mut seen = std::collections::HashSet::new();
        let mut size = None;
        while let Some(k) = map.next_key_seed(Key { ctx, at })? {
            let here = at.key(&k);
            if !seen.insert(k.clone()) {
                return Err(ctx.duplicate(here.pointer()));
            }
            if binary_size && k == "binary_data_size" {
                size = map.next_value_seed(SizeField { ctx, at: here })?;
            } else {
                map.next_value_seed(Drain { ctx, at: here })?;
            }
            ctx.element(|| here.pointer())?;
        }
        Ok(size)
    }
}

/// A non-negative integer (`binary_data_size`).
struct SizeField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl SizeField<'_, '_, '_> {
    fn mismatch(self) -> Option<u64> {
        let at = self.at;
        self.ctx
            .problem(|| at.pointer(), "must be a non-negative integer");
        None
    }
}

impl<'de> DeserializeSeed<'de> for SizeField<'_, '_, '_> {
    type Value = Option<u64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SizeField<'_, '_, '_> {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }
    otherwise!('de; bool, i64, f64, str, unit, seq, map);
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
}

/// The `inputs` array.
struct InputsField<'a, 'l, 'p, 'c> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
    contract: &'c ModelContract,
}

impl InputsField<'_, '_, '_, '_> {
    fn mismatch(self) -> Option<Vec<RawTensor>> {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be an array");
        None
    }
}

impl<'de> DeserializeSeed<'de> for InputsField<'_, '_, '_, '_> {
    type Value = Option<Vec<RawTensor>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputsField<'_, '_, '_, '_> {
    type Value = Option<Vec<RawTensor>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of input tensors")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, map);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let here = self.at.index(out.len());
            let seed = TensorSeed {
                ctx: &mut *self.ctx,
                at: here,
                contract: self.contract,
                index: out.len(),
            };
            match seq.next_element_seed(seed)? {
                Some(t) => out.push(t),
                None => return Ok(Some(out)),
            }
            self.ctx.element(|| here.pointer())?;
        }
    }
}

/// One input tensor object.
struct TensorSeed<'a, 'l, 'p, 'c> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
    contract: &'c ModelContract,
    index: usize,
}

impl TensorSeed<'_, '_, '_, '_> {
    fn mismatch(self) -> RawTensor {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be an object");
        let mut t = RawTensor::new(self.index);
        t.malformed = true;
        t
    }
}

impl<'de> DeserializeSeed<'de> for TensorSeed<'_, '_, '_, '_> {
    type Value = RawTensor;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawTensor, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TensorSeed<'_, '_, '_, '_> {
    type Value = RawTensor;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input tensor object")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTensor, A::Error> {
        let TensorSeed {
            ctx,
            at,
            contract,
            index,
        } = self;
        let mut t = RawTensor::new(index);
        let start = ctx.problems();
        let seen = each_field(ctx, at, &mut map, &TENSOR_FIELDS, |ctx, map, f| {
            let here = at.key(TENSOR_FIELDS[f]);
            match f {
                0 => {
                    t.name = map.next_value_seed(StrField { ctx, at: here })?;
                    t.seen |= 1;
                }
                1 => {
                    t.shape = map.next_value_seed(ShapeField {
                        ctx: &mut *ctx,
                        at: here,
                    })?;
                    if let Some(shape) = &t.shape {
                        let n = product(shape).unwrap_or(usize::MAX);
                        ctx.declared(n, || here.pointer())?;
                    }
                }
                2 => {
                    t.seen |= 1 << 2;
                    let name = map.next_value_seed(StrField { ctx, at: here })?;
                    if let Some(name) = name {
                        t.datatype = Datatype::parse(&name);
                        if t.datatype.is_none() {
                            ctx.problem_with(
                                || here.pointer(),
                                || format!("unknown datatype \"{}\"", echo(&name)),
                            );
                        }
                    }
                }
                3 => {
                    t.binary_size = map.next_value_seed(ParamsField {
                        ctx,
                        at: here,
                        binary_size: true,
                    })?;
                }
                _ => {
                    let sink = data_sink(&t, contract, ctx);
                    let mut w = Walker::new(Base::V2 { input: index }, sink, false);
                    map.next_value_seed(w.node(ctx))?;
                    t.data = Some(w.col);
                }
            }
            Ok(())
        })?;
        t.seen |= seen;
        let bad = t.data.as_ref().map_or(0, |c| c.bad);
        t.faulty = ctx.problems() - start > bad;
        Ok(t)
    }
}

/// Chooses where `data` goes, from what the tensor said before it: typed by the declared
/// datatype (or, before one is declared, the contract's), kept untyped when neither name nor
/// datatype came first, discarded when the tensor is already known to be refused.
fn data_sink(t: &RawTensor, contract: &ModelContract, ctx: &mut Ctx<'_>) -> Sink {
    let spec = match &t.name {
        Some(name) => match contract.input(name) {
            Some((_, spec)) => Some(spec),
            None => return Sink::Discard,
        },
        None if t.given(0) => return Sink::Discard,
        None => None,
    };
    let dt = match (t.datatype, t.given(2), spec) {
        (Some(dt), _, Some(spec)) if dt != spec.datatype => return Sink::Discard,
        (Some(dt), _, _) => dt,
        (None, true, _) => return Sink::Discard,
        (None, false, Some(spec)) => spec.datatype,
        (None, false, None) => return Sink::Untyped(Vec::new()),
    };
    let want = t.product().unwrap_or(0);
    Sink::Typed(dt, TensorData::with_capacity(dt, ctx.take_reserve(want)))
}

/// A request `shape`: concrete dimensions (>= 0), at most [`MAX_RANK`] of them.
struct ShapeField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl ShapeField<'_, '_, '_> {
    fn mismatch(self) -> Option<Vec<usize>> {
        let at = self.at;
        self.ctx
            .problem(|| at.pointer(), "must be an array of non-negative integers");
        None
    }
}

impl<'de> DeserializeSeed<'de> for ShapeField<'_, '_, '_> {
    type Value = Option<Vec<usize>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ShapeField<'_, '_, '_> {
    type Value = Option<Vec<usize>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shape")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, map);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ShapeField { ctx, at } = self;
        let mut dims = Vec::new();
        let mut ok = true;
        loop {
            let here = at.index(dims.len());
            if dims.len() == MAX_RANK {
                // Skip the rest, reporting once.
                if seq.next_element_seed(Drain { ctx, at: here })?.is_none() {
                    break;
                }
                ctx.problem(|| at.pointer(), format!("more than {MAX_RANK} dimensions"));
                super::parse::drain_seq(ctx, at, &mut seq)?;
                return Ok(None);
            }
            match seq.next_element_seed(DimField { ctx, at: here })? {
                None => break,
                Some(Some(d)) => dims.push(d),
                Some(None) => {
                    ok = false;
                    dims.push(0);
                }
            }
            ctx.element(|| here.pointer())?;
        }
        Ok(ok.then_some(dims))
    }
}

/// One dimension of a request shape.
struct DimField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl DimField<'_, '_, '_> {
    fn mismatch(self) -> Option<usize> {
        let at = self.at;
        self.ctx
            .problem(|| at.pointer(), "must be a non-negative integer");
        None
    }
}

impl<'de> DeserializeSeed<'de> for DimField<'_, '_, '_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DimField<'_, '_, '_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dimension")
    }
    otherwise!('de; bool, i64, f64, str, unit, seq, map);
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match usize::try_from(v) {
            Ok(d) => Ok(Some(d)),
            Err(_) => Ok(self.mismatch()),
        }
    }
}

/// The `outputs` array: `(index, name)` per entry.
struct OutputsField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl OutputsField<'_, '_, '_> {
    fn mismatch(self) -> Vec<(usize, Option<String>)> {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be an array");
        Vec::new()
    }
}

impl<'de> DeserializeSeed<'de> for OutputsField<'_, '_, '_> {
    type Value = Vec<(usize, Option<String>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputsField<'_, '_, '_> {
    type Value = Vec<(usize, Option<String>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of requested outputs")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, map);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let i = out.len();
            let here = self.at.index(i);
            let seed = OutputSeed {
                ctx: &mut *self.ctx,
                at: here,
            };
            match seq.next_element_seed(seed)? {
                Some(name) => out.push((i, name)),
                None => return Ok(out),
            }
            self.ctx.element(|| here.pointer())?;
        }
    }
}

/// One requested output object (`name`, optional `parameters`).
struct OutputSeed<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl OutputSeed<'_, '_, '_> {
    fn mismatch(self) -> Option<String> {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be an object");
        None
    }
}

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_, '_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_, '_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a requested output object")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, seq);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let OutputSeed { ctx, at } = self;
        let mut name = None;
        let seen = each_field(ctx, at, &mut map, &OUTPUT_FIELDS, |ctx, map, f| {
            let here = at.key(OUTPUT_FIELDS[f]);
            if f == 0 {
                name = map.next_value_seed(StrField { ctx, at: here })?;
            } else {
                map.next_value_seed(ParamsField {
                    ctx,
                    at: here,
                    binary_size: false,
                })?;
            }
            Ok(())
        })?;
        if seen & 1 == 0 {
            ctx.problem(|| at.pointer(), "missing \"name\"");
        }
        Ok(name)
    }
}

/// The contract checks on a parsed request. Problems go to `ctx`; the returned request is
/// meaningful only when `ctx` has none.
pub(crate) fn check_request(
    ctx: &mut Ctx<'_>,
    contract: &ModelContract,
    raw: RawRequest,
) -> ValidatedRequest {
    let mut slots: Vec<Option<ValidatedTensor>> = vec![None; contract.inputs.len()];
    let mut batch = Batch::default();
    if raw.not_object {
        return ValidatedRequest {
            id: None,
            batch: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
    }
    match raw.inputs {
        Some(tensors) => {
            let mut seen = vec![false; contract.inputs.len()];
            for t in tensors {
                check_tensor(ctx, contract, t, &mut seen, &mut slots, &mut batch);
            }
            for (k, spec) in contract.inputs.iter().enumerate() {
                if !seen[k] {
                    ctx.problem_with(
                        || "/inputs".into(),
                        || format!("missing input \"{}\"", spec.name),
                    );
                }
            }
        }
        None if !raw.inputs_given => ctx.problem(String::new, "missing \"inputs\""),
        None => {}
    }
    let mut outputs = Vec::with_capacity(raw.outputs.len());
    for (j, name) in raw.outputs {
        let Some(name) = name else { continue };
        if !contract.outputs.contains(&name) {
            ctx.problem_with(
                || format!("/outputs/{j}/name"),
                || {
                    format!(
                        "unknown output \"{}\"; the model's outputs are {}",
                        echo(&name),
                        list(contract.outputs.iter().map(String::as_str))
                    )
                },
            );
        } else if outputs.contains(&name) {
            ctx.problem(|| format!("/outputs/{j}/name"), "output requested twice");
        } else {
            outputs.push(name);
        }
    }
    ValidatedRequest {
        id: raw.id,
        batch: if contract.max_batch_size > 0 {
            batch.size.unwrap_or(0)
        } else {
            1
        },
        inputs: slots.into_iter().flatten().collect(),
        outputs,
    }
}

/// The batch size the first batched input set, and which input set it.
#[derive(Default)]
pub(crate) struct Batch {
    pub size: Option<usize>,
    pub from: String,
}

/// `"a", "b" and 3 more`, for messages naming what the contract allows.
pub(crate) fn list<'s>(names: impl Iterator<Item = &'s str>) -> String {
    let names: Vec<_> = names.collect();
    let mut out = names
        .iter()
        .take(8)
        .map(|n| format!("\"{}\"", echo(n)))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 8 {
        out.push_str(&format!(" and {} more", names.len() - 8));
    }
    if names.is_empty() {
        out.push_str("(none)");
    }
    out
}

fn check_tensor(
    ctx: &mut Ctx<'_>,
    contract: &ModelContract,
    mut t: RawTensor,
    seen: &mut [bool],
    slots: &mut [Option<ValidatedTensor>],
    batch: &mut Batch,
) {
    if t.malformed {
        return;
    }
    let i = t.index;
    let at = |field: &'static str| move || format!("/inputs/{i}/{field}");
    let before = ctx.problems();
    let Some(name) = t.name.take() else {
        if !t.given(0) {
            ctx.problem(|| format!("/inputs/{i}"), "missing \"name\"");
        }
        return;
    };
    let Some((k, spec)) = contract.input(&name) else {
        ctx.problem_with(at("name"), || {
            format!(
                "unknown input \"{}\"; the model's inputs are {}",
                echo(&name),
                list(contract.inputs.iter().map(|s| s.name.as_str()))
            )
        });
        return;
    };
    if seen[k] {
        ctx.problem_with(at("name"), || {
            format!("input \"{}\" appears more than once", spec.name)
        });
        return;
    }
    seen[k] = true;
    match t.datatype {
        None if !t.given(2) => ctx.problem(|| format!("/inputs/{i}"), "missing \"datatype\""),
        None => {}
        Some(dt) if dt != spec.datatype => ctx.problem_with(at("datatype"), || {
            format!(
                "input \"{}\" has datatype {}, not {dt}",
                spec.name, spec.datatype
            )
        }),
        Some(_) => {}
    }
    let shape_ok = match &t.shape {
        None => {
            if !t.given(1) {
                ctx.problem(|| format!("/inputs/{i}"), "missing \"shape\"");
            }
            false
        }
        Some(shape) => check_shape(ctx, contract, spec, shape, batch, |d| match d {
            Some(d) => format!("/inputs/{i}/shape/{d}"),
            None => format!("/inputs/{i}/shape"),
        }),
    };
    if t.binary_size.is_some() {
        ctx.problem(
            at("parameters/binary_data_size"),
            "binary tensor data needs the Inference-Header-Content-Length header",
        );
        return;
    }
    let Some(mut col) = t.data.take() else {
        if !t.given(4) {
            ctx.problem(|| format!("/inputs/{i}"), "missing \"data\"");
        }
        return;
    };
    let Some(shape) = t.shape.take().filter(|_| shape_ok) else {
        return;
    };
    if t.faulty || ctx.problems() > before {
        return;
    }
    let base = Base::V2 { input: i };
    let Some(levels) = col.nesting().map(<[usize]>::to_vec) else {
        ctx.problem(
            at("data"),
            "nested arrays are uneven; send data flat or nested exactly as the shape",
        );
        return;
    };
    let want = product(&shape).unwrap_or(usize::MAX);
    if levels.len() > 1 && levels != shape {
        ctx.problem_with(at("data"), || {
            format!("data is nested as {levels:?} but the shape is {shape:?}")
        });
        return;
    }
    if col.len != want {
        ctx.problem_with(at("data"), || {
            format!("shape {shape:?} needs {want} values, got {}", col.len)
        });
        return;
    }
    if col.bad > 0 || ctx.problems() > before {
        return;
    }
    col.convert(spec.datatype, ctx, base, &levels);
    let Sink::Typed(_, data) = col.sink else {
        return;
    };
    if ctx.problems() > before {
        return;
    }
    check_range(ctx, contract.feature_range, &data, base, &levels);
    if ctx.problems() > before {
        return;
    }
    slots[k] = Some(ValidatedTensor {
        name,
        datatype: spec.datatype,
        shape,
        data,
    });
}

/// Rank, fixed dimensions and batch size of a concrete `shape` against `spec`. `at(Some(d))`
/// points at dimension `d`, `at(None)` at the whole shape. Returns whether all passed.
pub(crate) fn check_shape(
    ctx: &mut Ctx<'_>,
    contract: &ModelContract,
    spec: &TensorSpec,
    shape: &[usize],
    batch: &mut Batch,
    at: impl Fn(Option<usize>) -> String,
) -> bool {
    let before = ctx.problems();
    if shape.len() != spec.shape.len() {
        ctx.problem_with(
            || at(None),
            || {
                format!(
                    "input \"{}\" has {} dimensions {}, got {}",
                    spec.name,
                    spec.shape.len(),
                    SpecShape(&spec.shape),
                    shape.len()
                )
            },
        );
        return false;
    }
    for (d, (&got, &want)) in shape.iter().zip(&spec.shape).enumerate() {
        if want >= 0 && i64::try_from(got) != Ok(want) {
            ctx.problem_with(
                || at(Some(d)),
                || format!("dimension {d} must be {want}, got {got}"),
            );
        }
    }
    let max = contract.max_batch_size;
    if max > 0
        && let Some(&b) = shape.first()
    {
        if b == 0 || b > max {
            ctx.problem_with(
                || at(Some(0)),
                || format!("batch size {b} is outside 1..={max}"),
            );
        } else {
            match &batch.size {
                None => {
                    batch.size = Some(b);
                    batch.from = spec.name.clone();
                }
                Some(b0) if *b0 != b => ctx.problem_with(
                    || at(Some(0)),
                    || {
                        format!(
                            "batch size {b} differs from input \"{}\" ({b0})",
                            batch.from
                        )
                    },
                ),
                Some(_) => {}
            }
        }
    }
    ctx.problems() == before
}

/// `[-1, 64]`.
struct SpecShape<'a>(&'a [i64]);

impl fmt::Display for SpecShape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Refuses numeric values outside the model's feature range, pointing at each.
pub(crate) fn check_range(
    ctx: &mut Ctx<'_>,
    range: Option<(f64, f64)>,
    data: &TensorData,
    base: Base<'_>,
    levels: &[usize],
) {
    let Some((lo, hi)) = range else {
        return;
    };
    let mut bad = |k: usize, v: f64| {
        ctx.problem_with(
            || data_pointer(base, &unflatten(k, levels)),
            || format!("value {v} is outside the model's feature range [{lo}, {hi}]"),
        );
    };
    let inside = |v: f64| v >= lo && v <= hi;
    match data {
        TensorData::F32(v) => {
            for (k, &x) in v.iter().enumerate() {
                if !inside(f64::from(x)) {
                    bad(k, f64::from(x));
                }
            }
        }
        TensorData::F64(v) => {
            for (k, &x) in v.iter().enumerate() {
                if !inside(x) {
                    bad(k, x);
                }
            }
        }
        TensorData::I64(v) => {
            for (k, &x) in v.iter().enumerate() {
                if !inside(x as f64) {
                    bad(k, x as f64);
                }
            }
        }
        TensorData::U64(v) => {
            for (k, &x) in v.iter().enumerate() {
                if !inside(x as f64) {
                    bad(k, x as f64);
                }
            }
        }
        TensorData::Bool(_) | TensorData::Bytes(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;
    use serde_json::json;

    pub(crate) fn digits() -> ModelContract {
        let text = include_str!("../../../models/digits.json");
        ModelContract::from_metadata_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    fn two_inputs() -> ModelContract {
        ModelContract::from_metadata_json(&json!({
            "name": "m",
            "max_batch_size": 8,
            "inputs": [
                {"name": "ids", "datatype": "INT32", "shape": [-1, 3]},
                {"name": "text", "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": [{"name": "y"}]
        }))
        .unwrap()
    }

    fn row(n: usize, v: f32) -> Vec<f32> {
        vec![v; n]
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn refused(c: &ModelContract, v: serde_json::Value) -> Denial {
        validate_v2(&body(v), c, &ValidationLimits::default()).unwrap_err()
    }

    fn paths(d: &Denial) -> Vec<&str> {
        d.details.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn accepts_flat_and_nested_digits_requests() {
        let c = digits();
        let flat: Vec<f32> = (0..128).map(|i| (i % 17) as f32).collect();
        let r = validate_v2(
            &body(
                json!({"id": "r1", "inputs": [{"name": "input", "shape": [2, 64],
                "datatype": "FP32", "data": flat}], "outputs": [{"name": "label"}]}),
            ),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap();
        assert_eq!(r.batch, 2);
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.outputs, vec!["label"]);
        assert_eq!(r.inputs[0].shape, vec![2, 64]);
        assert_eq!(r.inputs[0].as_f32().unwrap(), &flat[..]);
        let nested = vec![flat[..64].to_vec(), flat[64..].to_vec()];
        // Data before name and datatype: kept untyped, then converted.
        let r2 = validate_v2(
            &body(
                json!({"id": "r1", "inputs": [{"data": nested, "shape": [2, 64],
                "datatype": "FP32", "name": "input"}], "outputs": [{"name": "label"}]}),
            ),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap();
        assert_eq!(r, r2);
    }

    #[test]
    fn feature_range_points_at_the_flat_or_nested_index() {
        let c = digits();
        let mut flat = row(192, 1.0);
        flat[130] = 17.0;
        let e = refused(
            &c,
            json!({"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": flat}]}),
        );
        assert_eq!(e.code, Code::InvalidInput);
        assert_eq!(paths(&e), vec!["/inputs/0/data/130"]);
        let nested: Vec<Vec<f32>> = flat.chunks(64).map(<[f32]>::to_vec).collect();
        let e = refused(
            &c,
            json!({"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": nested}]}),
        );
        assert_eq!(paths(&e), vec!["/inputs/0/data/2/2"]);
    }

    #[test]
    fn each_contract_violation_has_its_pointer() {
        let c = digits();
        let ok = row(64, 1.0);
        let cases: Vec<(serde_json::Value, Code, Vec<&str>)> = vec![
            (json!([]), Code::InvalidInput, vec![""]),
            (json!({}), Code::InvalidInput, vec![""]),
            (json!({"inputs": {}}), Code::InvalidInput, vec!["/inputs"]),
            (json!({"inputs": []}), Code::InvalidInput, vec!["/inputs"]),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/name", "/inputs"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/datatype"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP8", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/datatype"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [64], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/shape"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/shape/1"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, -64], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/shape/1"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [65, 64], "datatype": "FP32", "data": row(65 * 64, 0.0)}]}),
                Code::InvalidInput,
                vec!["/inputs/0/shape/0"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [0, 64], "datatype": "FP32", "data": []}]}),
                Code::InvalidInput,
                vec!["/inputs/0/shape/0"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/0/data"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                    "data": [[ok], [1.0]]}]}),
                Code::InvalidInput,
                vec!["/inputs/0/data"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}),
                Code::InvalidInput,
                vec!["/inputs/0"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": 1}]}),
                Code::InvalidInput,
                vec!["/inputs/0/data"],
            ),
            (
                json!({"id": 7, "parameters": [], "inputs": [{"name": "input", "shape": [1, 64],
                    "datatype": "FP32", "data": ok}], "outputs": [{"name": "nope"}], "extra": 1}),
                Code::InvalidInput,
                vec!["/extra", "/id", "/outputs/0/name", "/parameters"],
            ),
            (
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ok,
                    "parameters": {"binary_data_size": 256}}]}),
                Code::InvalidInput,
                vec!["/inputs/0/parameters/binary_data_size"],
            ),
            (
                json!({"inputs": [
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ok},
                    {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ok}]}),
                Code::InvalidInput,
                vec!["/inputs/1/name"],
            ),
        ];
        for (v, code, want) in cases {
            let e = refused(&c, v.clone());
            assert_eq!(e.code, code, "{v}: {e:?}");
            let mut got = paths(&e);
            got.sort_unstable();
            let mut want = want;
            want.sort_unstable();
            assert_eq!(got, want, "{v}: {e:?}");
        }
    }

    #[test]
    fn values_must_fit_the_datatype() {
        let c = two_inputs();
        let ids = |data: serde_json::Value| {
            json!({"inputs": [
                {"name": "ids", "shape": [1, 3], "datatype": "INT32", "data": data},
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]})
        };
        let ok = validate_v2(
            &body(ids(json!([1, -2, 3]))),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap();
        assert_eq!(ok.inputs[0].data, TensorData::I64(vec![1, -2, 3]));
        assert_eq!(ok.inputs[1].data, TensorData::Bytes(vec![b"hi".to_vec()]));
        for (data, bad) in [
            (json!([1, 2.5, 3]), "/inputs/0/data/1"),
            (json!([1, 2, 3.0]), "/inputs/0/data/2"),
            (json!([1, 2, 2147483648u64]), "/inputs/0/data/2"),
            (json!([1, true, 3]), "/inputs/0/data/1"),
            (json!([1, "2", 3]), "/inputs/0/data/1"),
            (json!([1, null, 3]), "/inputs/0/data/1"),
            (json!([1, {}, 3]), "/inputs/0/data/1"),
        ] {
            let e = refused(&c, ids(data.clone()));
            assert_eq!(paths(&e), vec![bad], "{data}");
        }
        let e = refused(
            &c,
            json!({"inputs": [
                {"name": "ids", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": [1]}]}),
        );
        assert_eq!(paths(&e), vec!["/inputs/1/data/0"]);
        let e = refused(
            &c,
            json!({"inputs": [
                {"name": "ids", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]},
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}),
        );
        assert_eq!(paths(&e), vec!["/inputs/1/shape/0"]);
    }

    #[test]
    fn typed_streaming_and_untyped_fallback_agree() {
        // `json!` sorts keys, so `data` comes first (kept untyped, converted later); these
        // bodies put it last, as clients do, so it streams straight into typed vectors.
        let c = digits();
        let limits = ValidationLimits::default();
        let rows = |data: &str| {
            format!(
                r#"{{"inputs":[{{"name":"input","shape":[2,64],"datatype":"FP32","data":{data}}}]}}"#
            )
        };
        let mut flat = vec![json!(1.0); 128];
        flat[3] = json!(true);
        flat[70] = json!(99);
        flat[127] = json!("x");
        let nested = json!([flat[..64], flat[64..]]);
        for data in [json!(flat), nested] {
            let typed = validate_v2(rows(&data.to_string()).as_bytes(), &c, &limits).unwrap_err();
            let untyped = refused(
                &c,
                json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": data}]}),
            );
            assert_eq!(typed.details, untyped.details);
            // The out-of-range 99 is reported once the values are numbers.
            assert_eq!(typed.details.len(), 2, "{:?}", typed.details);
        }
        let ok: Vec<f32> = (0..128).map(|i| (i % 16) as f32).collect();
        let body = rows(&serde_json::to_string(&ok).unwrap());
        let r = validate_v2(body.as_bytes(), &c, &limits).unwrap();
        assert_eq!(r.inputs[0].as_f32().unwrap(), &ok[..]);
        // Name first, datatype after data: typed by the contract's datatype.
        let body = format!(
            r#"{{"inputs":[{{"name":"input","shape":[2,64],"data":{},"datatype":"FP32"}}]}}"#,
            serde_json::to_string(&ok).unwrap()
        );
        assert_eq!(validate_v2(body.as_bytes(), &c, &limits).unwrap(), r);
    }

    #[test]
    fn float_and_bool_ranges() {
        for (dt, v, ok) in [
            ("FP32", json!(3.5e38), false),
            ("FP32", json!(3.4e38), true),
            ("FP16", json!(65504.0), true),
            ("FP16", json!(65505.0), false),
            ("FP64", json!(1e308), true),
            ("BOOL", json!(true), true),
            ("BOOL", json!(1), false),
            ("UINT8", json!(255), true),
            ("UINT8", json!(256), false),
            ("UINT8", json!(-1), false),
            ("INT8", json!(-128), true),
            ("UINT64", json!(u64::MAX), true),
            ("INT64", json!(u64::MAX), false),
            ("INT64", json!(1e20), false),
        ] {
            let c = ModelContract::from_metadata_json(&json!({"name": "m",
                "inputs": [{"name": "x", "datatype": dt, "shape": [1]}]}))
            .unwrap();
            let r = validate_v2(
                &body(
                    json!({"inputs": [{"name": "x", "shape": [1], "datatype": dt, "data": [v]}]}),
                ),
                &c,
                &ValidationLimits::default(),
            );
            assert_eq!(r.is_ok(), ok, "{dt} {v}: {r:?}");
            if let Err(e) = r {
                assert_eq!(paths(&e), vec!["/inputs/0/data/0"]);
            }
        }
    }

    #[test]
    fn limits_on_elements_strings_and_duplicates() {
        let c = digits();
        let few = ValidationLimits {
            max_elements: 100,
            ..ValidationLimits::default()
        };
        let e = validate_v2(
            &body(
                json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                "data": row(128, 1.0)}]}),
            ),
            &c,
            &few,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::PayloadTooLarge);
        let e = validate_v2(
            &body(
                json!({"inputs": [{"name": "input", "shape": [100000000000u64, 64],
                "datatype": "FP32", "data": []}]}),
            ),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, paths(&e)),
            (Code::PayloadTooLarge, vec!["/inputs/0/shape"])
        );
        let short = ValidationLimits {
            max_string_bytes: 8,
            ..ValidationLimits::default()
        };
        let e = validate_v2(br#"{"id":"0123456789","inputs":[]}"#, &c, &short).unwrap_err();
        assert_eq!((e.code, paths(&e)), (Code::PayloadTooLarge, vec!["/id"]));
        for dup in [
            r#"{"inputs":[],"inputs":[]}"#,
            r#"{"inputs":[{"name":"input","name":"input"}]}"#,
            r#"{"parameters":{"a":1,"a":2},"inputs":[]}"#,
        ] {
            let e = validate_v2(dup.as_bytes(), &c, &ValidationLimits::default()).unwrap_err();
            assert_eq!(e.code, Code::InvalidJson, "{dup}");
        }
    }

    #[test]
    fn details_are_capped_but_counted() {
        let c = digits();
        let limits = ValidationLimits {
            max_errors: 3,
            ..ValidationLimits::default()
        };
        let e = validate_v2(
            &body(
                json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                "data": row(64, 99.0)}]}),
            ),
            &c,
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.details.len(), 3);
        assert!(e.message.contains("64 problems"), "{}", e.message);
    }

    #[test]
    fn tolerates_triton_model_name_and_output_parameters() {
        let c = digits();
        let r = validate_v2(
            &body(
                json!({"model_name": "digits", "parameters": {"binary_data_output": true},
                "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                    "parameters": {}, "data": row(64, 0.0)}],
                "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}]}),
            ),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap();
        assert_eq!(r.batch, 1);
    }

    #[test]
    fn unbatched_models_report_batch_one() {
        let c = ModelContract::from_metadata_json(&json!({"name": "m",
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [2, -1]}]}))
        .unwrap();
        let r = validate_v2(
            &body(
                json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64",
                "data": [[1, 2], [3, 4]]}]}),
            ),
            &c,
            &ValidationLimits::default(),
        )
        .unwrap();
        assert_eq!(r.batch, 1);
        assert_eq!(r.inputs[0].data, TensorData::F64(vec![1.0, 2.0, 3.0, 4.0]));
    }
}
