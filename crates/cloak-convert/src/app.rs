//! What the enclave runs: argv, environment, working directory and user, derived from the
//! image config with docker semantics (Entrypoint + Cmd, WORKDIR, USER, Env) plus overrides.

use std::collections::BTreeMap;

use cloak_image::spec::ImageConfig;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::options::split_env;

/// Overrides common to both targets.
#[derive(Debug, Clone, Default)]
pub struct AppOverrides {
    /// Replace Entrypoint (and, as `docker run --entrypoint` does, drop the image's Cmd).
    pub entrypoint: Option<Vec<String>>,
    /// Replace Cmd.
    pub args: Option<Vec<String>>,
    /// Fixed environment, measured (`NAME=value`); wins over the image's Env.
    pub fixed_env: Vec<String>,
    /// Defaults the operator may override at run time (`NAME=value`).
    pub mutable_env: Vec<String>,
    /// Accept extra arguments at run time.
    pub allow_cmdline_args: bool,
}

/// The application as the launcher will start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSpec {
    /// Full argv; argv[0] is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Fixed environment, image Env merged with the fixed overrides, in first-seen order.
    pub env: Vec<String>,
    /// Mutable environment defaults.
    pub mutable_env: Vec<String>,
    /// Working directory (`/` when the image sets none).
    pub workdir: String,
    /// `USER` as the image gives it (`""` = root).
    pub user: String,
    /// Accept extra arguments at run time.
    pub allow_cmdline_args: bool,
}

fn merge_env(base: &[String], overrides: &[String], what: &str) -> Result<Vec<String>> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (i, entry) in base.iter().chain(overrides).enumerate() {
        let Some((k, v)) = split_env(entry) else {
            let source = if i < base.len() {
                "the image's Env"
            } else {
                what
            };
            return Err(Error::Options(format!(
                "environment entry {entry:?} in {source} is not NAME=value"
            )));
        };
        if !values.contains_key(k) {
            order.push(k.to_string());
        }
        values.insert(k.to_string(), v.to_string());
    }
    Ok(order
        .into_iter()
        .map(|k| format!("{k}={}", values[&k]))
        .collect())
}

/// The ports an image config exposes (`ExposedPorts` keys, e.g. `80/tcp`), sorted.
pub fn exposed_ports(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.extra.get("ExposedPorts"))
        .and_then(|p| p.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Derive the application from the image config and the overrides.
pub fn app_spec(image: &str, config: &ImageConfig, o: &AppOverrides) -> Result<AppSpec> {
    let rc = config.config.clone().unwrap_or_default();
    let (entrypoint, cmd) = match &o.entrypoint {
        Some(ep) => (ep.clone(), o.args.clone().unwrap_or_default()),
        None => (
            rc.entrypoint.clone().unwrap_or_default(),
            o.args.clone().or(rc.cmd.clone()).unwrap_or_default(),
        ),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() || argv[0].is_empty() {
        return Err(Error::Options(format!(
            "{image} has neither Entrypoint nor Cmd, so there is nothing to run; pass --entrypoint (and --entrypoint-args)"
        )));
    }
    let env = merge_env(
        &rc.env.clone().unwrap_or_default(),
        &o.fixed_env,
        "the fixed environment",
    )?;
    let mutable_env = merge_env(&[], &o.mutable_env, "the mutable environment")?;
    let fixed_names: Vec<&str> = o
        .fixed_env
        .iter()
        .filter_map(|e| split_env(e).map(|(k, _)| k))
        .collect();
    if let Some(k) = mutable_env
        .iter()
        .filter_map(|m| split_env(m).map(|(k, _)| k))
        .find(|k| fixed_names.contains(k))
    {
        return Err(Error::Options(format!(
            "{k} is both fixed and mutable; list it in one of the two"
        )));
    }
    let workdir = rc
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(Error::Options(format!(
            "{image}: WORKDIR {workdir:?} is not absolute"
        )));
    }
    Ok(AppSpec {
        argv,
        env,
        mutable_env,
        workdir,
        user: rc.user.clone().unwrap_or_default(),
        allow_cmdline_args: o.allow_cmdline_args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloak_image::spec::RuntimeConfig;

    fn config(ep: Option<&[&str]>, cmd: Option<&[&str]>, env: &[&str]) -> ImageConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": RuntimeConfig {
                entrypoint: ep.map(v), cmd: cmd.map(v), env: Some(v(env)),
                working_dir: Some("/srv".into()), user: Some("app".into()), ..Default::default()
            }
        }))
        .unwrap()
    }

    fn strings(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[rstest::rstest]
    #[case::entrypoint_and_cmd(Some(&["/ep", "a"][..]), Some(&["c"][..]), None, None, &["/ep", "a", "c"][..])]
    #[case::cmd_only(None, Some(&["sh", "-c", "x"][..]), None, None, &["sh", "-c", "x"][..])]
    #[case::args_replace_cmd(Some(&["/ep"][..]), Some(&["c"][..]), None, Some(&["d"][..]), &["/ep", "d"][..])]
    #[case::entrypoint_override_drops_cmd(Some(&["/ep"][..]), Some(&["c"][..]), Some(&["/new"][..]), None, &["/new"][..])]
    #[case::both_overrides(None, None, Some(&["/new"][..]), Some(&["x"][..]), &["/new", "x"][..])]
    fn argv_follows_docker(
        #[case] ep: Option<&[&str]>,
        #[case] cmd: Option<&[&str]>,
        #[case] ep_override: Option<&[&str]>,
        #[case] args: Option<&[&str]>,
        #[case] expected: &[&str],
    ) {
        let o = AppOverrides {
            entrypoint: ep_override.map(strings),
            args: args.map(strings),
            ..Default::default()
        };
        let spec = app_spec("img", &config(ep, cmd, &[]), &o).unwrap();
        assert_eq!(spec.argv, strings(expected));
        assert_eq!(spec.workdir, "/srv");
        assert_eq!(spec.user, "app");
    }

    #[test]
    fn nothing_to_run_is_a_clear_error() {
        let err = app_spec(
            "docker://r/x:1",
            &config(None, None, &[]),
            &AppOverrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("docker://r/x:1") && err.to_string().contains("--entrypoint")
        );
    }

    #[test]
    fn fixed_env_overrides_image_env_in_place() {
        let o = AppOverrides {
            fixed_env: strings(&["B=new", "C=3"]),
            mutable_env: strings(&["D=4"]),
            ..Default::default()
        };
        let spec = app_spec("i", &config(None, Some(&["x"]), &["A=1", "B=2"]), &o).unwrap();
        assert_eq!(spec.env, strings(&["A=1", "B=new", "C=3"]));
        assert_eq!(spec.mutable_env, strings(&["D=4"]));
    }

    #[test]
    fn bad_env_entries_are_refused() {
        let o = AppOverrides {
            fixed_env: strings(&["NOEQUALS"]),
            ..Default::default()
        };
        let err = app_spec("i", &config(None, Some(&["x"]), &[]), &o).unwrap_err();
        assert!(err.to_string().contains("NOEQUALS"));
    }
}
