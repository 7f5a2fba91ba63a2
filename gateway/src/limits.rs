//! Turns the config's plans and route limits into limiter specs, once per snapshot.
//! The limiter's counts live in [`crate::pipeline::Shared`], not here, so a reload that
//! changes the numbers keeps them.

use std::collections::HashMap;

use modelgate_config::{Config, ConfigError, LimitsSpecSection};
use modelgate_plugins::ratelimit::{LimitSpec, parse_quota, parse_rate};

/// The plan every caller gets when its plan is not configured (and no `[plans.default]`
/// replaces it): 10 requests/s, burst 20, 8 in flight, no quota.
pub const BUILT_IN_DEFAULT: (&str, u32, u32) = ("10/s", 20, 8);

/// A plan's or a route's limits: a spec, or none at all (`unlimited = true`, for trusted
/// internal consumers: no limiter state, no `RateLimit-*` headers).
#[derive(Debug, Clone, Copy)]
enum Budget {
    Limited(LimitSpec),
    Unlimited,
}

impl Budget {
    fn spec(&self) -> Option<&LimitSpec> {
        match self {
            Budget::Limited(spec) => Some(spec),
            Budget::Unlimited => None,
        }
    }
}

/// Limits per plan and per route, ready for the limiter.
pub struct PlanLimits {
    plans: HashMap<String, Budget>,
    default: LimitSpec,
    /// Per route index: an override replacing the plan's limits, and a model-wide limit.
    routes: Vec<(Option<Budget>, Option<LimitSpec>)>,
}

impl PlanLimits {
    /// Parses every plan and route limit; errors carry config paths.
    pub fn build(config: &Config) -> Result<PlanLimits, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut plans = HashMap::new();
        for (name, section) in &config.plans {
            if let Some(spec) = parse_section(&format!("plans.{name}"), section, &mut errors) {
                plans.insert(name.clone(), spec);
            }
        }
        let (rate, burst, concurrency) = BUILT_IN_DEFAULT;
        let built_in = parse_rate(rate)
            .ok()
            .and_then(|r| LimitSpec::new(r, burst).ok())
            .map(|s| s.with_concurrency(concurrency));
        let default = match plans.get("default") {
            Some(Budget::Limited(spec)) => Some(*spec),
            Some(Budget::Unlimited) => {
                errors.push(ConfigError {
                    path: "plans.default.unlimited".into(),
                    message: "the default plan must have limits: every caller without a \
                              configured plan gets it"
                        .into(),
                });
                None
            }
            None => built_in,
        };
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = format!("routes[{i}]");
                (
                    r.limits
                        .as_ref()
                        .and_then(|s| parse_section(&format!("{at}.limits"), s, &mut errors)),
                    r.model_limit.as_ref().and_then(|s| {
                        let at = format!("{at}.model_limit");
                        match parse_section(&at, s, &mut errors)? {
                            Budget::Limited(spec) => Some(spec),
                            Budget::Unlimited => {
                                errors.push(ConfigError {
                                    path: format!("{at}.unlimited"),
                                    message: "a model limit cannot be unlimited; leave it out"
                                        .into(),
                                });
                                None
                            }
                        }
                    }),
                )
            })
            .collect();
        match default {
            Some(default) if errors.is_empty() => Ok(PlanLimits {
                plans,
                default,
                routes,
            }),
            _ => Err(errors),
        }
    }

    /// The limits for a caller on plan `plan` calling route `route` (index) — `None` when
    /// unlimited — and the route's model-wide limit.
    pub fn for_request(
        &self,
        plan: &str,
        route: usize,
    ) -> (Option<&LimitSpec>, Option<&LimitSpec>) {
        let (override_, model) = self
            .routes
            .get(route)
            .map_or((None, None), |(o, m)| (o.as_ref(), m.as_ref()));
        let spec = match override_.or_else(|| self.plans.get(plan)) {
            Some(budget) => budget.spec(),
            None => Some(&self.default),
        };
        (spec, model)
    }

    /// The default plan's limits (the base of the extraction throttle for unlimited plans).
    pub fn default_spec(&self) -> &LimitSpec {
        &self.default
    }
}

fn parse_section(at: &str, s: &LimitsSpecSection, errors: &mut Vec<ConfigError>) -> Option<Budget> {
    let mut fail = |path: String, message: String| errors.push(ConfigError { path, message });
    if s.unlimited == Some(true) {
        if s.rate.is_some() || s.burst.is_some() || s.concurrency.is_some() || s.quota.is_some() {
            fail(
                format!("{at}.unlimited"),
                "cannot be combined with rate, burst, concurrency or quota".into(),
            );
            return None;
        }
        return Some(Budget::Unlimited);
    }
    let Some(rate_text) = &s.rate else {
        fail(format!("{at}.rate"), "is required (e.g. \"100/s\")".into());
        return None;
    };
    let rate = parse_rate(rate_text)
        .map_err(|e| fail(format!("{at}.rate"), e.to_string()))
        .ok()?;
    let burst = s.burst.unwrap_or(rate.count.get());
    let mut spec = LimitSpec::new(rate, burst)
        .map_err(|e| fail(format!("{at}.burst"), e.to_string()))
        .ok()?;
    if let Some(cap) = s.concurrency {
        if cap == 0 {
            fail(format!("{at}.concurrency"), "must be > 0".into());
            return None;
        }
        spec = spec.with_concurrency(cap);
    }
    if let Some(quota) = &s.quota {
        spec = spec.with_quota(
            parse_quota(quota)
                .map_err(|e| fail(format!("{at}.quota"), e.to_string()))
                .ok()?,
        );
    }
    Some(Budget::Limited(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(plans_and_limits: &str) -> Result<PlanLimits, Vec<ConfigError>> {
        let text = format!(
            "[auth]\nkey_store = \"k.json\"\n{plans_and_limits}\n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\n\
             [routes.http]\nupstreams = [\"http://127.0.0.1:1\"]\n"
        );
        let config = modelgate_config::parse(&text, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e:?}"));
        PlanLimits::build(&config)
    }

    fn error_paths(e: Vec<ConfigError>) -> Vec<String> {
        e.into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn unlimited_plans_have_no_spec_and_unknown_plans_get_the_default() {
        let limits = build("[plans.internal]\nunlimited = true\n[plans.std]\nrate = \"5/s\"\n")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(limits.for_request("internal", 0).0.is_none());
        assert_eq!(
            limits.for_request("std", 0).0.map(|s| s.burst.get()),
            Some(5)
        );
        let default = limits.for_request("nope", 0).0.map(|s| s.burst.get());
        assert_eq!(default, Some(BUILT_IN_DEFAULT.1));
    }

    #[test]
    fn unlimited_is_refused_where_it_would_be_unsafe_or_ambiguous() {
        let e = build("[plans.default]\nunlimited = true\n")
            .err()
            .map(error_paths);
        assert_eq!(e, Some(vec!["plans.default.unlimited".to_string()]));
        let e = build("[plans.x]\nunlimited = true\nrate = \"1/s\"\n")
            .err()
            .map(error_paths);
        assert_eq!(e, Some(vec!["plans.x.unlimited".to_string()]));
    }
}
