//! TF-Serving-style `:predict` bodies: `{"instances": [...]}` (row format: one entry per batch
//! row, either the single input's value or an object keyed by input name) or
//! `{"inputs": ...}` (columnar: the single input's batched value, or an object of them).
//! Shapes come from the nesting; values stream straight into the contract's datatype.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ValidationLimits;
use super::contract::ModelContract;
use super::parse::{
    Base, Ctx, Key, Node, Path, Sink, Walker, drain_map, echo, otherwise, push_key, run,
};
use super::v2::{
    Batch, TensorData, ValidatedRequest, ValidatedTensor, check_range, check_shape, list,
};
use crate::Denial;

/// Parses a `:predict` body and checks it against `contract`: every input present (in every
/// row), no other, data regular (no uneven rows) with the contract's rank and fixed
/// dimensions, batch size within `max_batch_size`, each value of the input's datatype, the
/// feature range. The optional `signature_name` must be a string. TF's `{"b64": "..."}`
/// binary strings are BYTES elements (standard base64, decoded and checked; in any other
/// datatype they are refused). Refusals: see the [module docs](super).
pub fn validate_predict(
    body: &[u8],
    contract: &ModelContract,
    limits: &ValidationLimits,
) -> Result<ValidatedRequest, Denial> {
    let mut ctx = Ctx::new(limits);
    let mut st = State {
        contract,
        walkers: (0..contract.inputs.len()).map(|_| None).collect(),
        keyed: None,
        rows: None,
        format: None,
    };
    run(body, &mut ctx, |de, ctx| {
        Top {
            st: &mut st,
            ctx,
            at: Path::ROOT,
        }
        .deserialize(de)
    })?;
    if ctx.problems() > 0 {
        return Err(ctx.into_denial("request does not match the model's inputs"));
    }
    let request = check(&mut ctx, st);
    ctx.finish("request does not match the model's inputs")?;
    Ok(request)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Instances,
    Columns,
}

struct State<'c> {
    contract: &'c ModelContract,
    /// One per contract input, created when its data first appears.
    walkers: Vec<Option<Walker<'c>>>,
    /// Whether values are objects keyed by input name (decided by the first row/value).
    keyed: Option<bool>,
    rows: Option<usize>,
    format: Option<Format>,
}

impl<'c> State<'c> {
    /// The walker for input `k`, created for `format` (`keyed`: the pointer names the input).
    fn walker(&mut self, k: usize, format: Format, keyed: bool) -> &mut Walker<'c> {
        let contract = self.contract;
        self.walkers[k].get_or_insert_with(|| {
            let spec = &contract.inputs[k];
            let key = keyed.then_some(spec.name.as_str());
            let base = match format {
                Format::Instances => Base::Instances { key },
                Format::Columns => Base::Columns { key },
            };
            let dt = spec.datatype;
            Walker::new(
                base,
                Sink::Typed(dt, TensorData::with_capacity(dt, 0)),
                format == Format::Columns,
            )
        })
    }
}

struct Top<'s, 'c, 'a, 'l> {
    st: &'s mut State<'c>,
    ctx: &'a mut Ctx<'l>,
    at: Path<'static>,
}

impl Top<'_, '_, '_, '_> {
    fn mismatch(self) {
        self.ctx
            .problem(String::new, "the request must be a JSON object");
    }
}

impl<'de> DeserializeSeed<'de> for Top<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a predict request object")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Top { st, ctx, at } = self;
        let mut seen = [false; 3];
        while let Some(k) = map.next_key_seed(Key { ctx, at })? {
            let here = at.key(&k);
            let field = ["signature_name", "instances", "inputs"]
                .iter()
                .position(|n| *n == k);
            let Some(f) = field else {
                ctx.problem(|| here.pointer(), "unknown field");
                map.next_value_seed(super::parse::Drain { ctx, at: here })?;
                continue;
            };
            if std::mem::replace(&mut seen[f], true) {
                return Err(ctx.duplicate(here.pointer()));
            }
            match f {
                0 => {
                    map.next_value_seed(NameField { ctx, at: here })?;
                }
                _ if st.format.is_some() => {
                    ctx.problem(
                        || here.pointer(),
                        "send \"instances\" or \"inputs\", not both",
                    );
                    map.next_value_seed(super::parse::Drain { ctx, at: here })?;
                }
                1 => {
                    st.format = Some(Format::Instances);
                    map.next_value_seed(Rows {
                        st: &mut *st,
                        ctx,
                        at: Path::raw("/instances"),
                    })?;
                }
                _ => {
                    st.format = Some(Format::Columns);
                    map.next_value_seed(Value {
                        st: &mut *st,
                        ctx,
                        row: None,
                    })?;
                }
            }
        }
        if st.format.is_none() {
            ctx.problem(String::new, "missing \"instances\" or \"inputs\"");
        }
        Ok(())
    }
}

/// `signature_name`: a string, otherwise ignored.
struct NameField<'a, 'l, 'p> {
    ctx: &'a mut Ctx<'l>,
    at: Path<'p>,
}

impl NameField<'_, '_, '_> {
    fn mismatch(self) {
        let at = self.at;
        self.ctx.problem(|| at.pointer(), "must be a string");
    }
}

impl<'de> DeserializeSeed<'de> for NameField<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NameField<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    otherwise!('de; bool, i64, u64, f64, unit, seq, map);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let at = self.at;
        self.ctx.string(v.len(), || at.pointer())
    }
}

/// The `instances` array.
struct Rows<'s, 'c, 'a, 'l> {
    st: &'s mut State<'c>,
    ctx: &'a mut Ctx<'l>,
    at: Path<'static>,
}

impl Rows<'_, '_, '_, '_> {
    fn mismatch(self) {
        self.ctx
            .problem(|| "/instances".into(), "must be an array of rows");
    }
}

impl<'de> DeserializeSeed<'de> for Rows<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    otherwise!('de; bool, i64, u64, f64, str, unit, map);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Rows { st, ctx, .. } = self;
        let mut r = 0;
        loop {
            ctx.element(|| format!("/instances/{r}"))?;
            let seed = Value {
                st: &mut *st,
                ctx: &mut *ctx,
                row: Some(r),
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            r += 1;
        }
        if r == 0 {
            ctx.problem(|| "/instances".into(), "must hold at least one row");
        }
        st.rows = Some(r);
        Ok(())
    }
}

/// One row (`row: Some`) or the whole `inputs` value (`row: None`): an object keyed by input
/// name, or the single input's value.
struct Value<'s, 'c, 'a, 'l> {
    st: &'s mut State<'c>,
    ctx: &'a mut Ctx<'l>,
    row: Option<usize>,
}

impl<'c> Value<'_, 'c, '_, '_> {
    fn at(&self) -> String {
        match self.row {
            Some(r) => format!("/instances/{r}"),
            None => "/inputs".into(),
        }
    }

    fn format(&self) -> Format {
        if self.row.is_some() {
            Format::Instances
        } else {
            Format::Columns
        }
    }

    /// Visits the single input's value with `visit`; refuses (and skips) it when the model has
    /// several inputs or earlier rows were keyed.
    fn plain<R>(self, visit: impl FnOnce(Node<'_, '_, '_, '_>) -> R) -> R {
        let format = self.format();
        let keyed = *self.st.keyed.get_or_insert(false);
        let fits = !keyed && self.st.contract.inputs.len() == 1;
        if !fits {
            let message = if keyed {
                "every row must have the same form (an object keyed by input name)".to_owned()
            } else {
                format!(
                    "the model has {} inputs; send an object keyed by input name ({})",
                    self.st.contract.inputs.len(),
                    list(self.st.contract.inputs.iter().map(|s| s.name.as_str()))
                )
            };
            let at = self.at();
            self.ctx.problem(|| at, message);
            let mut skip = Walker::new(Base::Columns { key: None }, Sink::Discard, true);
            skip.path.extend(self.row);
            return visit(skip.node(self.ctx));
        }
        let w = self.st.walker(0, format, false);
        w.path.extend(self.row);
        let out = visit(w.node(self.ctx));
        w.path.clear();
        out
    }
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data or an object keyed by input name")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.plain(|n| n.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.plain(|n| n.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.plain(|n| n.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.plain(|n| n.visit_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.plain(|n| n.visit_str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.plain(|n| n.visit_unit())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.plain(|n| n.visit_seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let format = self.format();
        let at_s = self.at();
        let Value { st, ctx, row } = self;
        let at = Path::raw(&at_s);
        if !*st.keyed.get_or_insert(true) {
            ctx.problem(
                || at.pointer(),
                "every row must have the same form as the first",
            );
            return drain_map(ctx, at, &mut map);
        }
        let contract = st.contract;
        let mut present = vec![false; contract.inputs.len()];
        while let Some(k) = map.next_key_seed(Key { ctx, at })? {
            let here = at.key(&k);
            let Some((i, _)) = contract.input(&k) else {
                ctx.problem_with(
                    || here.pointer(),
                    || {
                        format!(
                            "unknown input \"{}\"; the model's inputs are {}",
                            echo(&k),
                            list(contract.inputs.iter().map(|s| s.name.as_str()))
                        )
                    },
                );
                map.next_value_seed(super::parse::Drain { ctx, at: here })?;
                continue;
            };
            if std::mem::replace(&mut present[i], true) {
                return Err(ctx.duplicate(here.pointer()));
            }
            let w = st.walker(i, format, true);
            w.path.extend(row);
            map.next_value_seed(w.node(ctx))?;
            w.path.clear();
        }
        for (i, spec) in contract.inputs.iter().enumerate() {
            if !present[i] {
                ctx.problem_with(
                    || at.pointer(),
                    || format!("missing input \"{}\"", spec.name),
                );
            }
        }
        Ok(())
    }
}

/// Shapes (from the nesting), batch and feature range, per contract input.
fn check(ctx: &mut Ctx<'_>, st: State<'_>) -> ValidatedRequest {
    let contract = st.contract;
    let mut batch = Batch::default();
    let mut inputs = Vec::with_capacity(contract.inputs.len());
    for (spec, w) in contract.inputs.iter().zip(st.walkers) {
        let Some(mut w) = w else {
            continue;
        };
        if let Some(rows) = st.rows {
            w.set_level(0, rows);
        }
        let at = match w.base {
            Base::Instances { .. } => "/instances".to_owned(),
            Base::Columns { key } => {
                let mut s = "/inputs".to_owned();
                if let Some(k) = key {
                    push_key(&mut s, k);
                }
                s
            }
            Base::V2 { input } => format!("/inputs/{input}"),
        };
        let Some(shape) = w.col.nesting().map(<[usize]>::to_vec) else {
            ctx.problem(
                || at,
                format!(
                    "input {:?}: uneven nesting: every row and sub-array must have the same length",
                    spec.name
                ),
            );
            continue;
        };
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(w.col.len) {
            ctx.problem(|| at, format!("input {:?}: uneven nesting", spec.name));
            continue;
        }
        if !check_shape(ctx, contract, spec, &shape, &mut batch, |_| at.clone()) {
            continue;
        }
        let Sink::Typed(datatype, data) = w.col.sink else {
            continue;
        };
        check_range(ctx, contract.feature_range, &data, w.base, &shape);
        inputs.push(ValidatedTensor {
            name: spec.name.clone(),
            datatype,
            shape,
            data,
        });
    }
    ValidatedRequest {
        id: None,
        batch: if contract.max_batch_size > 0 {
            batch.size.unwrap_or(0)
        } else {
            1
        },
        inputs,
        outputs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;
    use serde_json::json;

    fn digits() -> ModelContract {
        let text = include_str!("../../../models/digits.json");
        ModelContract::from_metadata_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    fn two() -> ModelContract {
        ModelContract::from_metadata_json(&json!({"name": "m", "max_batch_size": 4,
            "inputs": [
                {"name": "a", "datatype": "INT64", "shape": [-1, 2]},
                {"name": "b", "datatype": "FP32", "shape": [-1]}]}))
        .unwrap()
    }

    fn go(c: &ModelContract, v: serde_json::Value) -> Result<ValidatedRequest, Denial> {
        validate_predict(
            &serde_json::to_vec(&v).unwrap(),
            c,
            &ValidationLimits::default(),
        )
    }

    fn paths(d: &Denial) -> Vec<&str> {
        d.details.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn b64_objects_are_decoded_bytes_elements() {
        let c = ModelContract::from_metadata_json(&json!({"name": "m", "max_batch_size": 4,
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [-1]},
                {"name": "n", "datatype": "INT64", "shape": [-1]}]}))
        .unwrap();
        let ok = go(
            &c,
            json!({"instances": [{"text": {"b64": "aGk="}, "n": 1}, {"text": "plain", "n": 2}]}),
        )
        .unwrap();
        assert_eq!(
            ok.inputs[0].data,
            TensorData::Bytes(vec![b"hi".to_vec(), b"plain".to_vec()])
        );
        // Unpadded base64 is accepted too; binary content need not be UTF-8.
        let ok = go(&c, json!({"inputs": {"text": [{"b64": "/w"}], "n": [1]}})).unwrap();
        assert_eq!(ok.inputs[0].data, TensorData::Bytes(vec![vec![0xff]]));
        for (body, want) in [
            (
                json!({"instances": [{"text": {"b64": "@@"}, "n": 1}]}),
                "/instances/0/text",
            ),
            (
                json!({"instances": [{"text": {"b64": 3}, "n": 1}]}),
                "/instances/0/text",
            ),
            (
                json!({"instances": [{"text": {"b64": "aGk=", "x": 1}, "n": 1}]}),
                "/instances/0/text",
            ),
            (
                json!({"instances": [{"text": "a", "n": {"b64": "AQ=="}}]}),
                "/instances/0/n",
            ),
        ] {
            let e = go(&c, body.clone()).unwrap_err();
            assert_eq!(
                (e.code, paths(&e)),
                (Code::InvalidInput, vec![want]),
                "{body}"
            );
        }
    }

    #[test]
    fn row_and_columnar_forms_agree() {
        let c = digits();
        let rows: Vec<Vec<f32>> = (0..3).map(|r| vec![r as f32; 64]).collect();
        let a = go(&c, json!({"instances": rows})).unwrap();
        let b = go(&c, json!({"inputs": rows})).unwrap();
        let k = go(
            &c,
            json!({"signature_name": "serving_default",
            "instances": rows.iter().map(|r| json!({"input": r})).collect::<Vec<_>>()}),
        )
        .unwrap();
        let kc = go(&c, json!({"inputs": {"input": rows}})).unwrap();
        assert_eq!(a.batch, 3);
        assert_eq!(a.inputs[0].shape, vec![3, 64]);
        assert_eq!(a, b);
        assert_eq!(a, k);
        assert_eq!(a, kc);
    }

    #[test]
    fn multi_input_rows() {
        let c = two();
        let r = go(
            &c,
            json!({"instances": [{"a": [1, 2], "b": 0.5}, {"b": 1.5, "a": [3, 4]}]}),
        )
        .unwrap();
        assert_eq!(r.batch, 2);
        assert_eq!(
            r.input("a").unwrap().data,
            TensorData::I64(vec![1, 2, 3, 4])
        );
        assert_eq!(r.input("b").unwrap().data, TensorData::F32(vec![0.5, 1.5]));
        let e = go(&c, json!({"instances": [{"a": [1, 2]}]})).unwrap_err();
        assert_eq!(
            (e.code, paths(&e)),
            (Code::InvalidInput, vec!["/instances/0"])
        );
        let e = go(&c, json!({"instances": [{"a": [1, 2.5], "b": 1}]})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances/0/a/1"]);
        let e = go(&c, json!({"instances": [[1, 2]]})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances/0"]);
        let e = go(&c, json!({"inputs": {"a": [[1, 2]], "b": [1.0, 2.0]}})).unwrap_err();
        assert_eq!(paths(&e), vec!["/inputs/b"]);
    }

    #[test]
    fn refusals_point_into_rows() {
        let c = digits();
        let mut rows: Vec<Vec<f32>> = (0..2).map(|_| vec![1.0; 64]).collect();
        rows[1][5] = -1.0;
        let e = go(&c, json!({"instances": rows})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances/1/5"]);
        rows[1].pop();
        let e = go(&c, json!({"instances": rows})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances"]);
        let e = go(&c, json!({"instances": [vec![1.0; 63]]})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances"]);
        for (v, want) in [
            (json!({}), ""),
            (json!({"instances": []}), "/instances"),
            (json!({"instances": {}}), "/instances"),
            (json!({"instances": [vec![0; 64]], "extra": 1}), "/extra"),
            (json!({"instances": [{"nope": 1}]}), "/instances/0/nope"),
            (
                json!({"instances": [vec![0; 64]], "signature_name": 3}),
                "/signature_name",
            ),
        ] {
            let e = go(&c, v.clone()).unwrap_err();
            assert_eq!(e.code, Code::InvalidInput, "{v}");
            assert_eq!(paths(&e)[0], want, "{v}");
        }
        let too_many: Vec<Vec<f32>> = (0..65).map(|_| vec![1.0; 64]).collect();
        let e = go(&c, json!({"instances": too_many})).unwrap_err();
        assert_eq!(paths(&e), vec!["/instances"]);
        let e = validate_predict(
            br#"{"instances":[[1]],"inputs":[[1]]}"#,
            &c,
            &ValidationLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidInput);
    }
}
