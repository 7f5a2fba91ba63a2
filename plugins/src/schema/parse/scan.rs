//! A strict single-pass reader over JSON bytes, for fast paths that handle the common shape
//! of a document and hand everything else to the serde path: each method returns `None` for
//! input it does not take (anything malformed included), and the caller then starts over
//! with serde_json, which reports the problem. Numbers come out as the [`Scalar`]s
//! serde_json would produce: `u64`/`i64` integers, otherwise the correctly rounded `f64`
//! (serde_json is built with `float_roundtrip`).

use serde::de::value::Error as NoError;

use super::{
    Ctx, Scalar, Sink, ValueError, Walker, data_pointer, f32_value, float, i64_value, u64_value,
};
use crate::schema::v2::TensorData;

/// Reading position in a JSON document.
pub(crate) struct Scanner<'r> {
    raw: &'r [u8],
    /// `raw` as text (JSON text is UTF-8, checked once for the whole document): strings
    /// are sliced from it instead of each being checked on its own.
    text: &'r str,
    at: usize,
}

impl<'r> Scanner<'r> {
    /// A scanner at the start of `text`.
    pub fn over_text(text: &'r str) -> Self {
        Scanner {
            raw: text.as_bytes(),
            text,
            at: 0,
        }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.raw.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// Consumes `b`, the next byte that is not whitespace.
    pub fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// After a member or element: `true` past a comma, `false` past `close`.
    #[inline]
    pub fn more(&mut self, close: u8) -> Option<bool> {
        let more = match self.peek()? {
            b',' => true,
            b if b == close => false,
            _ => return None,
        };
        self.at += 1;
        Some(more)
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A string without escapes or control characters, in valid UTF-8.
    pub fn string(&mut self) -> Option<&'r str> {
        self.eat(b'"')?;
        let rest = &self.raw[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        let start = self.at;
        self.at += len + 1;
        // Both ends sit next to a quote, so on character boundaries.
        self.text.get(start..start + len)
    }

    /// Back to `at`, a position this scanner was at before.
    pub fn rewind(&mut self, at: usize) {
        self.at = at;
    }

    /// Where the next byte that is not whitespace is.
    pub fn position(&mut self) -> usize {
        self.peek();
        self.at
    }

    /// A string, escapes allowed (and checked): `Some(Some(text))` when it has none,
    /// `Some(None)` when it has some (its text then differs from every plain name).
    pub fn string_or_escaped(&mut self) -> Option<Option<&'r str>> {
        let start = self.position();
        if let Some(plain) = self.string() {
            return Some(Some(plain));
        }
        self.at = start;
        self.eat(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            match *self.raw.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += match *self.raw.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' => {
                            let hex = self.raw.get(self.at + 2..self.at + 6)?;
                            hex.iter().all(u8::is_ascii_hexdigit).then_some(6)?
                        }
                        _ => return None,
                    };
                }
                b if b < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        let text = std::str::from_utf8(&self.raw[start..self.at]).ok()?;
        self.at += 1;
        Some((!escaped).then_some(text))
    }

    /// Skips one value of any kind, at most `max_depth` arrays and objects deep.
    pub fn skip_value(&mut self, max_depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string_or_escaped().map(drop),
            open @ (b'{' | b'[') => {
                let object = open == b'{';
                let close = if object { b'}' } else { b']' };
                self.at += 1;
                if self.peek()? == close {
                    self.at += 1;
                    return Some(());
                }
                let depth = max_depth.checked_sub(1)?;
                loop {
                    if object {
                        self.string_or_escaped()?;
                        self.eat(b':')?;
                    }
                    self.skip_value(depth)?;
                    if !self.more(close)? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.skip_number(),
        }
    }

    /// Skips a number, checking its grammar; one that could be out of the `f64` range (an
    /// exponent, or over 300 integer digits) is read whole, as serde_json would.
    fn skip_number(&mut self) -> Option<()> {
        let raw = self.raw;
        let int_start = self.at + usize::from(raw.get(self.at) == Some(&b'-'));
        let int_end = digit_run(raw, int_start);
        let n = int_end - int_start;
        if n == 0 || (raw[int_start] == b'0' && n > 1) {
            return None;
        }
        let mut end = int_end;
        if raw.get(end) == Some(&b'.') {
            end = digit_run(raw, end + 1);
            if end == int_end + 1 {
                return None;
            }
        }
        if n > 300 || matches!(raw.get(end), Some(b'e' | b'E')) {
            return self.number().map(drop);
        }
        self.at = end;
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.raw[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// A JSON number, as serde_json would hand it over; `None` if malformed or beyond the
    /// `f64` range (serde_json refuses those too).
    #[inline(always)]
    pub fn number(&mut self) -> Option<Scalar<'static>> {
        self.peek()?;
        let raw = self.raw;
        let start = self.at;
        let negative = raw[start] == b'-';
        let int_start = start + usize::from(negative);
        let (mut i, mut significand) = digits(raw, int_start, 0);
        let mut count = i - int_start;
        if count == 0 || (count > 1 && raw[int_start] == b'0') {
            return None;
        }
        // The common case, an integer of up to 19 digits: exact in a `u64`.
        if count <= 19 && !matches!(raw.get(i), Some(b'.' | b'e' | b'E')) {
            self.at = i;
            return Some(integer(significand, negative));
        }
        let (mut exp10, mut integral, mut plain) = (0i64, true, true);
        if raw.get(i) == Some(&b'.') {
            let (end, s) = digits(raw, i + 1, significand);
            let n = end - (i + 1);
            if n == 0 {
                return None;
            }
            (i, significand, exp10, integral) = (end, s, -(n as i64), false);
            count += n;
        }
        if let Some(b'e' | b'E') = raw.get(i) {
            i += 1;
            let minus = raw.get(i) == Some(&b'-');
            i += usize::from(matches!(raw.get(i), Some(b'+' | b'-')));
            let (end, e) = digits(raw, i, 0);
            let n = end - i;
            if n == 0 {
                return None;
            }
            i = end;
            // Up to 18 digits `e` is exact; longer exponents go to the general parse.
            plain &= n <= 18;
            let e = e as i64;
            exp10 = exp10.wrapping_add(if minus { e.wrapping_neg() } else { e });
            integral = false;
        }
        self.at = i;
        // Up to 19 digits the significand is exact in a `u64` (integers that short have
        // returned above).
        if plain && count <= 19 {
            // Clinger's fast path: an exact significand times or over an exact power of
            // ten is one correctly rounded operation.
            if significand <= 1 << 53
                && let Some(&p) = POW10.get(exp10.unsigned_abs() as usize)
            {
                let m = significand as f64;
                let f = if exp10 < 0 { m / p } else { m * p };
                return Some(Scalar::F(if negative { -f } else { f }));
            }
        }
        let text = std::str::from_utf8(&raw[start..i]).ok()?;
        if integral && let Ok(s) = text[usize::from(negative)..].parse::<u64>() {
            return Some(integer(s, negative));
        }
        // Longer significands, exponents out of the exact range, integers past `u64`: the
        // standard library's correctly rounded parse.
        let f = text.parse::<f64>().ok()?;
        f.is_finite().then_some(Scalar::F(f))
    }
}

/// Where the decimal digits from `raw[i..]` end.
fn digit_run(raw: &[u8], mut i: usize) -> usize {
    while raw.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Consumes decimal digits from `raw[i..]` onto `acc` (wrapping past `u64`; callers count
/// the digits); returns where they end and the value.
#[inline]
fn digits(raw: &[u8], mut i: usize, mut acc: u64) -> (usize, u64) {
    while let Some(d) = raw.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
        acc = acc.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    (i, acc)
}

/// An integer as serde_json hands it over: `u64`, `i64` when negative, and a float for
/// `-0` and below `i64::MIN`.
fn integer(magnitude: u64, negative: bool) -> Scalar<'static> {
    if !negative {
        return Scalar::U(magnitude);
    }
    let n = (magnitude as i64).wrapping_neg();
    if n >= 0 {
        Scalar::F(-(magnitude as f64))
    } else {
        Scalar::I(n)
    }
}

/// The powers of ten an `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Walker<'_> {
    /// Streams one value made of arrays and numbers from `s` into the walker, under the
    /// same rules as the serde path; `depth` is the nesting already open around it.
    /// `None` for anything else, nesting deeper than `max_depth`, a limit reached (the
    /// refusal is left in `ctx` for the caller to roll back) or an array of a typed tensor
    /// that is not all numbers its datatype holds (see [`Walker::typed_run`]).
    pub(crate) fn scan(
        &mut self,
        ctx: &mut Ctx<'_>,
        s: &mut Scanner<'_>,
        depth: usize,
    ) -> Option<()> {
        let (base, path) = (self.base, &self.path);
        ctx.element::<NoError>(|| data_pointer(base, path)).ok()?;
        if s.peek()? != b'[' {
            let v = s.number()?;
            return self.leaf::<NoError>(ctx, v).ok();
        }
        if depth >= ctx.limits.max_depth {
            return None;
        }
        s.at += 1;
        let level = self.path.len();
        self.path.push(0);
        let mut n = 0;
        if s.peek()? == b']' {
            s.at += 1;
        } else if matches!(self.col.sink, Sink::Typed(..)) && s.peek()? != b'[' {
            n = self.typed_run(ctx, s)?;
        } else {
            loop {
                self.scan(ctx, s, depth + 1)?;
                n += 1;
                if let Some(last) = self.path.last_mut() {
                    *last = n;
                }
                if !s.more(b']')? {
                    break;
                }
            }
        }
        self.path.pop();
        self.col.record_level(level, n);
        Some(())
    }

    /// The elements of an innermost array of a typed tensor, read straight into it: per
    /// element only the number, its conversion (the one [`super::push`] uses) and the
    /// append, the element limit checked once per array (well under half the cost of
    /// [`Walker::scan`] per element, the common case). `None` for an array that is not all
    /// numbers the datatype holds (numbers mixed with arrays, a value out of range): a
    /// problem the serde path then finds and reports, as the fast paths give up on every
    /// problem.
    fn typed_run(&mut self, ctx: &mut Ctx<'_>, s: &mut Scanner<'_>) -> Option<usize> {
        if !self.col.leaf_at(self.path.len()) {
            return None;
        }
        let Sink::Typed(dt, data) = &mut self.col.sink else {
            return None;
        };
        let dt = *dt;
        // One loop per element type, so the type is matched once per array, not per element.
        let n = match data {
            TensorData::F32(out) => run(ctx, s, out, |v| f32_value(dt, v)),
            TensorData::F64(out) => run(ctx, s, out, float),
            TensorData::I64(out) => run(ctx, s, out, |v| i64_value(dt, v)),
            TensorData::U64(out) => run(ctx, s, out, |v| u64_value(dt, v)),
            // Not numbers: the serde path says what is wrong.
            TensorData::Bool(_) | TensorData::Bytes(_) => None,
        }?;
        self.col.len += n;
        Some(n)
    }
}

/// The numbers of one array up to its `]`, each converted by `value` onto `out`; `None` at
/// the first that is not a number or not a value of the type, or past the element limit
/// (the serde path then says where: this path only ever runs to be rolled back on failure,
/// so the elements are counted once for the whole array).
#[inline(always)]
fn run<T>(
    ctx: &mut Ctx<'_>,
    s: &mut Scanner<'_>,
    out: &mut Vec<T>,
    value: impl Fn(Scalar<'_>) -> Result<T, ValueError>,
) -> Option<usize> {
    let left = ctx.elements_left();
    let mut n = 0;
    loop {
        if n == left {
            return None;
        }
        out.push(value(s.number()?).ok()?);
        n += 1;
        if !s.more(b']')? {
            ctx.count_elements(n);
            return Some(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use proptest::prelude::*;
    use serde::de::{DeserializeSeed, Deserializer, Visitor};

    use super::super::{Base, Sink};
    use super::*;
    use crate::schema::ValidationLimits;
    use crate::schema::contract::Datatype;
    use crate::schema::v2::TensorData;

    /// serde_json's reading of one number, as the [`Scalar`] it would hand over.
    struct Serde;

    impl<'de> Visitor<'de> for Serde {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, v: u64) -> Result<String, E> {
            Ok(format!("{:?}", Scalar::U(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<String, E> {
            Ok(format!("{:?}", Scalar::I(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<String, E> {
            Ok(format!("{:?}", Scalar::F(v)))
        }
    }

    fn serde_number(text: &str) -> Option<String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = (&mut de).deserialize_any(Serde).ok()?;
        de.end().ok().map(|()| v)
    }

    fn scanned_number(text: &str) -> Option<String> {
        let mut s = Scanner::over_text(text);
        let v = s.number()?;
        s.at_end().then(|| format!("{v:?}"))
    }

    /// Everything one walk leaves behind, printed (`Debug` keeps `-0.0` apart from `0.0`).
    fn walk(text: &str, sink: Option<Datatype>, max_elements: usize, fast: bool) -> String {
        let limits = ValidationLimits {
            max_elements,
            ..ValidationLimits::default()
        };
        let mut ctx = Ctx::new(&limits);
        let sink = match sink {
            Some(dt) => Sink::Typed(dt, TensorData::with_capacity(dt, 0)),
            None => Sink::Untyped(Vec::new()),
        };
        let mut w = Walker::new(Base::V2 { input: 3 }, sink, false);
        let ok = if fast {
            let mut s = Scanner::over_text(text);
            w.scan(&mut ctx, &mut s, 0).is_some() && s.at_end()
        } else {
            let mut de = serde_json::Deserializer::from_str(text);
            w.node(&mut ctx)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .is_ok()
        };
        let values = match &w.col.sink {
            Sink::Typed(dt, data) => format!("{dt} {data:?}"),
            Sink::Untyped(vals) => format!("{vals:?}"),
            Sink::Discard => "discarded".into(),
        };
        format!(
            "ok={ok} values={values} len={} bad={} nesting={:?} fatal={:?} problems={} {:?}",
            w.col.len,
            w.col.bad,
            w.col.nesting(),
            ctx.fatal,
            ctx.problems,
            ctx.details
        )
    }

    /// Number spellings, ordinary and edge: integer and float limits, `-0`, exponents,
    /// values beyond `f64` and below its precision, and malformed ones.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..300).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            // Around the exact fast path's edges: 2^53 and 10^22.
            ((0u64..1 << 54), -25i32..25).prop_map(|(m, e)| format!("{m}e{e}")),
            ((0u64..100_000), (0u32..10_000_000), 0usize..8)
                .prop_map(|(i, f, z)| format!("-{i}.{}{f}", "0".repeat(z))),
            proptest::sample::select(vec![
                "-0",
                "0",
                "-0.0",
                "0.1",
                "1.5E+3",
                "2e-3",
                "1e400",
                "-1e400",
                "1e-400",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "18446744073709551616",
                "123456789012345678901234567890",
                "65504",
                "65505",
                "3.5e38",
                "1.55e-9223372036854775807",
                "1.5e9223372036854775808",
                "9007199254740993.0",
                // Malformed: both readers refuse these.
                "01",
                "-01",
                "1.",
                ".5",
                "+1",
                "-",
                "1e",
                "1e+",
                "--1",
                "1.5.2",
                "0x10",
                "1_000",
            ])
            .prop_map(str::to_owned),
        ]
    }

    /// JSON-ish arrays of numbers, nested up to three levels, with whitespace; sometimes
    /// malformed (a stray comma, a missing bracket) or holding a non-number.
    fn document() -> impl Strategy<Value = String> {
        let ws = || proptest::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]);
        let leaf = prop_oneof![
            20 => number(),
            1 => proptest::sample::select(vec!["null", "true", "\"1\"", "{}"]).prop_map(str::to_owned),
        ];
        leaf.prop_recursive(3, 40, 6, move |inner| {
            (
                proptest::collection::vec((inner, ws(), ws()), 0..6),
                ws(),
                proptest::sample::select(vec!["]", "]", "]", "]", ",]", ""]),
            )
                .prop_map(|(items, tail, close)| {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|(v, a, b)| format!("{a}{v}{b}"))
                        .collect();
                    format!("[{}{tail}{close}", items.join(","))
                })
        })
    }

    /// JSON-ish text: valid tokens, near-misses and stray bytes, in any order.
    fn json_ish() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"k\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "\"\u{1}\"",
            "\"é\"",
            "0",
            "-1",
            "01",
            "1.5",
            "1.",
            "2e3",
            "1e400",
            "-0.0E-2",
            "true",
            "nul",
            "null",
            "false",
            "x",
        ]);
        prop::collection::vec(token, 1..24).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Skipping a value takes exactly the texts serde_json reads as one `Value`.
        #[test]
        fn skip_value_takes_what_serde_takes(text in json_ish()) {
            let mut s = Scanner::over_text(&text);
            let skipped = s.skip_value(128).is_some() && s.at_end();
            let serde = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            prop_assert_eq!(skipped, serde, "{}", text);
        }

        /// A string (any characters, escapes and controls included) is taken only as
        /// serde_json reads it: plain, without escapes or controls.
        #[test]
        fn strings_read_as_serde_json_reads_them(inner in "(\\PC|[\\\\\"\u{0}-\u{1f}])*") {
            let text = format!("\"{inner}\" ");
            let mut scanner = Scanner::over_text(&text);
            if let Some(taken) = scanner.string().filter(|_| scanner.at_end()) {
                prop_assert_eq!(Some(taken.to_string()), serde_json::from_str::<String>(&text).ok());
            }
        }

        /// A number is read exactly as serde_json reads it, and refused where it refuses it.
        #[test]
        fn numbers_read_as_serde_json_reads_them(text in number()) {
            prop_assert_eq!(scanned_number(&text), serde_number(&text), "{}", text);
        }

        /// Where the scan takes a value, the walk leaves exactly what the serde path leaves:
        /// values, counts, nesting, problems and refusals, for every datatype and with tight
        /// element limits. Where it does not, serde_json refuses the document, meets a
        /// value that is not a number, or (typed sinks) finds a problem.
        #[test]
        fn scan_agrees_with_the_serde_path(
            text in document(),
            sink in proptest::option::of(proptest::sample::select(Datatype::ALL.to_vec())),
            max_elements in prop_oneof![1usize..40, Just(usize::MAX)],
        ) {
            let fast = walk(&text, sink, max_elements, true);
            let slow = walk(&text, sink, max_elements, false);
            if fast.starts_with("ok=true") {
                prop_assert_eq!(fast, slow);
            } else {
                let plain = !text.contains(['"', 'n', 't', '{']);
                let refused = slow.starts_with("ok=false") || slow.contains("cannot be a tensor element");
                let problem = !slow.contains(" problems=0 ") || slow.contains(" nesting=None ");
                let typed_problem = sink.is_some() && problem;
                prop_assert!(refused || !plain || typed_problem, "scan refused what serde takes: {}", text);
            }
        }
    }

    #[test]
    fn reads_numbers_as_serde_json_does() {
        let fp64 = Some(Datatype::Fp64);
        let out = walk(
            "[1, -0, 2.5e-1, 18446744073709551616]",
            fp64,
            usize::MAX,
            true,
        );
        assert!(
            out.contains("values=FP64 F64([1.0, -0.0, 0.25, 1.8446744073709552e19])"),
            "{out}"
        );
        let out = walk("[[1,2],[3]]", Some(Datatype::Int8), usize::MAX, true);
        assert!(out.contains("nesting=None"), "{out}");
        assert!(walk("[0, 1e400]", fp64, usize::MAX, true).starts_with("ok=false"));
        // The array and its three numbers are four elements: the fast walk takes them at a
        // limit of four and gives up below it, where the serde walk says where the limit
        // was reached.
        assert!(walk("[1, 2, 3]", fp64, 4, true).starts_with("ok=true"));
        assert!(walk("[1, 2, 3]", fp64, 3, true).starts_with("ok=false"));
        let out = walk("[1, 2, 3]", fp64, 2, false);
        assert!(
            out.starts_with("ok=false") && out.contains("/inputs/3/data/1"),
            "{out}"
        );
    }
}
