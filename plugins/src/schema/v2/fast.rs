//! The fast path for the common v2 JSON request: one pass over the bytes with [`Scanner`],
//! no serde machinery. It takes only a request the serde path would accept without a
//! single problem — known fields, plain strings, numeric tensor data, `parameters` empty —
//! and gives up (leaving `ctx` as it found it) on anything else, which the serde path then
//! reads and reports. Where it does finish, its [`RawRequest`] is the serde path's, field
//! for field (property-tested below).

use super::{
    OUTPUT_FIELDS, REQUEST_FIELDS, RawRequest, RawTensor, TENSOR_FIELDS, data_sink, product,
};
use crate::schema::contract::{Datatype, MAX_RANK, ModelContract};
use crate::schema::parse::{Base, Ctx, Scalar, Scanner, Walker};

/// Reads `body` if it is a request the fast path takes.
pub(super) fn parse_request(
    body: &[u8],
    contract: &ModelContract,
    ctx: &mut Ctx<'_>,
) -> Option<RawRequest> {
    // Bytes that are not UTF-8 are not JSON text: the serde path says so.
    let text = std::str::from_utf8(body).ok()?;
    let start = ctx.checkpoint();
    let problems = ctx.problems();
    ctx.budget(body.len());
    let mut reader = Reader {
        s: Scanner::over_text(text),
        ctx,
        contract,
    };
    let out = reader.request().filter(|_| reader.s.at_end());
    match out {
        Some(raw) if ctx.problems() == problems => Some(raw),
        _ => {
            ctx.rollback(start);
            None
        }
    }
}

struct Reader<'r, 'a, 'l, 'c> {
    s: Scanner<'r>,
    ctx: &'a mut Ctx<'l>,
    contract: &'c ModelContract,
}

impl<'r> Reader<'r, '_, '_, '_> {
    fn request(&mut self) -> Option<RawRequest> {
        let mut out = RawRequest::default();
        self.fields(1, &REQUEST_FIELDS, |r, f| {
            match f {
                0 => out.id = Some(r.string()?.to_owned()),
                1 => r.empty_object(2)?,
                2 => {
                    out.inputs_given = true;
                    out.inputs = Some(r.inputs()?);
                }
                3 => out.outputs = r.outputs()?,
                _ => drop(r.string()?),
            }
            Some(())
        })?;
        Some(out)
    }

    /// An object at nesting `depth` whose keys are all in `known`, each once: calls `field`
    /// with the key's index; returns the bitmask of fields seen.
    fn fields(
        &mut self,
        depth: usize,
        known: &[&str],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<u32> {
        self.open(b'{', depth)?;
        let mut seen = 0u32;
        if self.s.peek()? == b'}' {
            self.s.eat(b'}')?;
            return Some(seen);
        }
        loop {
            let key = self.string()?;
            let i = known.iter().position(|k| *k == key)?;
            if seen & (1 << i) != 0 {
                return None;
            }
            seen |= 1 << i;
            self.s.eat(b':')?;
            field(self, i)?;
            if !self.s.more(b'}')? {
                return Some(seen);
            }
        }
    }

    /// Consumes `bracket`, opening nesting level `depth` (within `max_depth`).
    fn open(&mut self, bracket: u8, depth: usize) -> Option<()> {
        (depth <= self.ctx.limits.max_depth).then_some(())?;
        self.s.eat(bracket)
    }

    /// An array at nesting `depth`: calls `item` with each element's index.
    fn items(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.open(b'[', depth)?;
        if self.s.peek()? == b']' {
            return self.s.eat(b']');
        }
        let mut i = 0;
        loop {
            item(self, i)?;
            i += 1;
            if !self.s.more(b']')? {
                return Some(());
            }
        }
    }

    /// Counts one element against `max_elements`.
    fn element(&mut self) -> Option<()> {
        self.ctx
            .element::<serde::de::value::Error>(String::new)
            .ok()
    }

    /// A string (key or value) within `max_string_bytes`.
    fn string(&mut self) -> Option<&'r str> {
        let s = self.s.string()?;
        (s.len() <= self.ctx.limits.max_string_bytes).then_some(s)
    }

    /// `{}` at nesting `depth` (a `parameters` object with anything in it is left to serde).
    fn empty_object(&mut self, depth: usize) -> Option<()> {
        self.fields(depth, &[], |_, _| None).map(drop)
    }

    fn inputs(&mut self) -> Option<Vec<RawTensor>> {
        let mut out = Vec::new();
        self.items(2, |r, i| {
            out.push(r.tensor(i)?);
            r.element()
        })?;
        Some(out)
    }

    fn tensor(&mut self, index: usize) -> Option<RawTensor> {
        let mut t = RawTensor::new(index);
        self.fields(3, &TENSOR_FIELDS, |r, f| {
            match f {
                0 => t.name = Some(r.string()?.to_owned()),
                1 => {
                    let shape = r.shape()?;
                    let declared = product(&shape).unwrap_or(usize::MAX);
                    (declared <= r.ctx.limits.max_elements).then_some(())?;
                    t.shape = Some(shape);
                }
                2 => t.datatype = Some(Datatype::parse(r.string()?)?),
                3 => r.empty_object(4)?,
                _ => {
                    let sink = data_sink(&t, r.contract, r.ctx);
                    let mut w = Walker::new(Base::V2 { input: index }, sink, false);
                    w.scan(r.ctx, &mut r.s, 3)?;
                    t.data = Some(w.col);
                }
            }
            // The fields seen so far (`data_sink` reads those before `data`).
            t.seen |= 1 << f;
            Some(())
        })?;
        Some(t)
    }

    /// A shape: at most [`MAX_RANK`] non-negative integers.
    fn shape(&mut self) -> Option<Vec<usize>> {
        let mut dims = Vec::new();
        self.items(4, |r, i| {
            (i < MAX_RANK).then_some(())?;
            let Scalar::U(d) = r.s.number()? else {
                return None;
            };
            dims.push(usize::try_from(d).ok()?);
            r.element()
        })?;
        Some(dims)
    }

    /// Requested outputs: `{"name": ...}` objects, `parameters` empty if present.
    fn outputs(&mut self) -> Option<Vec<(usize, Option<String>)>> {
        let mut out = Vec::new();
        self.items(2, |r, i| {
            let mut name = None;
            let seen = r.fields(3, &OUTPUT_FIELDS, |r, f| {
                match f {
                    0 => name = Some(r.string()?.to_owned()),
                    _ => r.empty_object(4)?,
                }
                Some(())
            })?;
            (seen & 1 != 0).then_some(())?;
            out.push((i, name));
            r.element()
        })?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use serde_json::json;

    use super::super::parse_request_serde;
    use super::*;
    use crate::schema::ValidationLimits;

    fn contracts() -> [ModelContract; 2] {
        let digits = include_str!("../../../../models/digits.json");
        let two = json!({
            "name": "m", "max_batch_size": 8,
            "inputs": [
                {"name": "a", "datatype": "INT8", "shape": [-1, 2]},
                {"name": "b", "datatype": "FP64", "shape": [-1]}
            ],
            "outputs": [{"name": "y"}]
        });
        [
            ModelContract::from_metadata_json(&serde_json::from_str(digits).unwrap()).unwrap(),
            ModelContract::from_metadata_json(&two).unwrap(),
        ]
    }

    /// The parse through the fast path if it takes `body`, with what it left in `ctx`.
    fn fast(body: &str, contract: &ModelContract, limits: &ValidationLimits) -> Option<String> {
        let mut ctx = Ctx::new(limits);
        let fresh = format!("{ctx:?}");
        match parse_request(body.as_bytes(), contract, &mut ctx) {
            Some(raw) => Some(format!("{raw:?} {ctx:?}")),
            None => {
                assert_eq!(format!("{ctx:?}"), fresh, "gave up without restoring ctx");
                None
            }
        }
    }

    fn serde(body: &str, contract: &ModelContract, limits: &ValidationLimits) -> Option<String> {
        let mut ctx = Ctx::new(limits);
        let raw = parse_request_serde(body.as_bytes(), contract, &mut ctx).ok()?;
        Some(format!("{raw:?} {ctx:?}"))
    }

    fn pick(options: &[&'static str]) -> impl Strategy<Value = String> + use<> {
        proptest::sample::select(options.to_vec()).prop_map(str::to_owned)
    }

    /// Joins `members` (`"key": value`) into an object, in a shuffled order.
    fn object(members: Vec<String>) -> impl Strategy<Value = String> {
        Just(members)
            .prop_shuffle()
            .prop_map(|m| format!("{{{}}}", m.join(",")))
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            60 => (0u32..17).prop_map(|n| n.to_string()),
            30 => (-1000i32..100_000).prop_map(|n| format!("{}", f64::from(n) / 100.0)),
            1 => pick(&["-0", "1e400", "300", "-129", "1.5e-3", "01", "1.", "18446744073709551616"]),
        ]
    }

    fn data() -> impl Strategy<Value = String> {
        let flat =
            proptest::collection::vec(number(), 0..70).prop_map(|v| format!("[{}]", v.join(",")));
        let nested = proptest::collection::vec(proptest::collection::vec(number(), 0..4), 0..4)
            .prop_map(|rows| {
                let rows: Vec<String> = rows
                    .iter()
                    .map(|r| format!("[ {} ]", r.join(", ")))
                    .collect();
                format!("[\n{}\n]", rows.join(",\n"))
            });
        prop_oneof![6 => flat, 3 => nested, 1 => pick(&["\"x\"", "[1,\"a\"]", "[1,2,]", "[[1],2]", "7", "[true]"])]
    }

    fn tensor() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            8 => pick(&["\"input\"", "\"a\"", "\"b\"", "\"x\"", "\"\""]),
            1 => pick(&["\"inp\\u0075t\"", "1"]),
        ];
        let shape = prop_oneof![
            4 => pick(&["[1,64]", "[64]", "[2,2]", "[1,2]", "[2]", "[3]", "[ 1 , 64 ]"]),
            1 => proptest::collection::vec(pick(&["1", "2", "0", "64", "-1", "1.5", "\"1\"", "18446744073709551616"]), 0..6)
                .prop_map(|d| format!("[{}]", d.join(","))),
            1 => pick(&["7", "{}"]),
        ];
        let datatype = prop_oneof![
            8 => pick(&["\"FP32\"", "\"FP32\"", "\"FP64\"", "\"INT8\"", "\"BYTES\""]),
            1 => pick(&["\"BAD\"", "null"]),
        ];
        let params = pick(&["{}", "{ }", "{\"binary_data_size\":8}", "[]"]);
        let members = (
            proptest::option::weighted(0.9, name),
            proptest::option::weighted(0.9, shape),
            proptest::option::weighted(0.9, datatype),
            proptest::option::weighted(0.9, data()),
            proptest::option::weighted(0.2, params),
            proptest::option::weighted(0.05, pick(&["\"foo\": 1", "\"name\": \"input\""])),
        );
        let obj = members.prop_flat_map(|(n, s, d, v, p, extra)| {
            let mut m = Vec::new();
            m.extend(n.map(|v| format!("\"name\": {v}")));
            m.extend(s.map(|v| format!("\"shape\":{v}")));
            m.extend(d.map(|v| format!("\"datatype\" : {v}")));
            m.extend(v.map(|v| format!("\"data\":{v}")));
            m.extend(p.map(|v| format!("\"parameters\":{v}")));
            m.extend(extra);
            object(m)
        });
        prop_oneof![20 => obj, 1 => pick(&["3", "[]"])]
    }

    fn request() -> impl Strategy<Value = String> {
        let inputs = prop_oneof![
            10 => proptest::collection::vec(tensor(), 0..3).prop_map(|t| format!("[{}]", t.join(","))),
            1 => pick(&["{}", "\"x\""]),
        ];
        let outputs = prop_oneof![
            6 => proptest::collection::vec(
                pick(&[
                    "{\"name\":\"probabilities\"}",
                    "{\"name\":\"label\",\"parameters\":{}}",
                    "{}",
                    "{\"name\":1}",
                    "{\"parameters\":{\"a\":1},\"name\":\"y\"}",
                    "\"y\""
                ]),
                0..3,
            )
            .prop_map(|o| format!("[{}]", o.join(","))),
            1 => pick(&["{}"]),
        ];
        let members = (
            proptest::option::weighted(0.5, pick(&["\"r1\"", "1", "\"a\\\"b\"", "\"é\""])),
            proptest::option::weighted(0.95, inputs),
            proptest::option::weighted(0.4, outputs),
            proptest::option::weighted(0.2, pick(&["{}", "{\"a\":1}"])),
            proptest::option::weighted(0.2, pick(&["\"digits\"", "2"])),
            proptest::option::weighted(0.05, pick(&["\"zzz\": 1", "\"id\": \"again\""])),
        );
        let obj = members.prop_flat_map(|(id, i, o, p, name, extra)| {
            let mut m = Vec::new();
            m.extend(id.map(|v| format!("\"id\":{v}")));
            m.extend(i.map(|v| format!("\"inputs\":{v}")));
            m.extend(o.map(|v| format!("\"outputs\":{v}")));
            m.extend(p.map(|v| format!("\"parameters\":{v}")));
            m.extend(name.map(|v| format!("\"model_name\":{v}")));
            m.extend(extra);
            object(m)
        });
        (
            obj,
            prop_oneof![9 => pick(&["", " ", "\n"]), 1 => pick(&["x", "{}"])],
        )
            .prop_map(|(o, tail)| format!(" {o}{tail}"))
    }

    fn limits() -> impl Strategy<Value = ValidationLimits> {
        (
            prop_oneof![6 => Just(usize::MAX), 1 => 1usize..150],
            prop_oneof![6 => Just(64usize), 1 => 1usize..6],
            prop_oneof![6 => Just(65536usize), 1 => 0usize..8],
        )
            .prop_map(
                |(max_elements, max_depth, max_string_bytes)| ValidationLimits {
                    max_elements,
                    max_depth,
                    max_string_bytes,
                    ..ValidationLimits::default()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Where the fast path takes a request, the serde path reads the same request with
        /// no problem and counts the same elements; where it does not, `ctx` is untouched.
        #[test]
        fn agrees_with_the_serde_path(body in request(), which in 0usize..2, limits in limits()) {
            let contract = &contracts()[which];
            if let Some(fast) = fast(&body, contract, &limits) {
                prop_assert_eq!(Some(fast), serde(&body, contract, &limits), "{}", body);
            }
        }
    }

    /// The equivalence test means something only if the fast path takes a fair share of
    /// the generated requests (about one in six; the rest exercise giving up).
    #[test]
    fn generated_requests_take_both_paths() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = (request(), 0usize..2, limits());
        let contracts = contracts();
        let taken = (0..2000)
            .filter(|_| {
                let (body, which, limits) = strategy.new_tree(&mut runner).unwrap().current();
                fast(&body, &contracts[which], &limits).is_some()
            })
            .count();
        assert!(
            (250..1750).contains(&taken),
            "fast path took {taken} of 2000"
        );
    }

    #[test]
    fn takes_the_common_requests() {
        let [digits, _] = contracts();
        let limits = ValidationLimits::default();
        let row: Vec<u32> = (0..64).map(|i| i % 17).collect();
        let floats: Vec<f32> = (0..64).map(|i| i as f32 / 4.0).collect();
        for body in [
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}),
            json!({"id": "r", "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [floats]}],
                   "outputs": [{"name": "label"}], "parameters": {}}),
            json!({"inputs": [{"data": row, "datatype": "FP32", "shape": [1, 64], "name": "input", "parameters": {}}]}),
        ] {
            for text in [
                body.to_string(),
                serde_json::to_string_pretty(&body).unwrap(),
            ] {
                let fast = fast(&text, &digits, &limits).expect("fast path taken");
                assert!(fast.contains("problems: 0"), "{fast}");
            }
        }
    }
}
