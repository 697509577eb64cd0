//! Where credentials come from, in the AWS SDKs' order: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, through STS); the shared files
//! (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, profile `AWS_PROFILE`: keys, or a
//! `credential_process`); a container's endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or
//! `_FULL_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `_FILE`); the EC2 instance metadata
//! service (unless `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
//! Pure but for reading the two shared files: fetching is `s3`'s.

use std::path::PathBuf;

use rusty_s3::Credentials;

use crate::s3::CredentialSource;

/// The profile's settings, from the shared files, that matter here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub region: Option<String>,
    key: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    process: Option<String>,
    /// Where its keys or process were found, for the log.
    from: String,
}

/// Reads the profile from the shared files (missing files are fine: most hosts have none).
/// `Err`: the profile was asked for by name and is in neither file.
pub fn profile(env: &impl Fn(&str) -> Option<String>) -> Result<Profile, String> {
    let named = env("AWS_PROFILE").or_else(|| env("AWS_DEFAULT_PROFILE"));
    let name = named.clone().unwrap_or_else(|| "default".into());
    // Without HOME (a bare systemd unit), only files named by the variables are read.
    let home = env("HOME").map(PathBuf::from);
    let in_home = |rel: &str| home.as_ref().map(|h| h.join(rel));
    let creds_file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| in_home(".aws/credentials"))
        .unwrap_or_default();
    let config_file = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| in_home(".aws/config"))
        .unwrap_or_default();
    let mut p = Profile {
        name: name.clone(),
        ..Profile::default()
    };
    let mut found = false;
    // The config file first, so that the credentials file wins where both give keys.
    let config_section = match name.as_str() {
        "default" => vec!["default".to_string(), "profile default".to_string()],
        n => vec![format!("profile {n}")],
    };
    for (file, sections) in [
        (&config_file, config_section),
        (&creds_file, vec![name.clone()]),
    ] {
        if file.as_os_str().is_empty() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for section in &sections {
            let Some(pairs) = ini_section(&text, section) else {
                continue;
            };
            found = true;
            for (k, v) in pairs {
                match k.as_str() {
                    "region" => p.region = Some(v),
                    "aws_access_key_id" => p.key = Some(v),
                    "aws_secret_access_key" => p.secret = Some(v),
                    "aws_session_token" => p.token = Some(v),
                    "credential_process" => p.process = Some(v),
                    _ => continue,
                }
                if k != "region" {
                    p.from = format!("profile {name} in {}", file.display());
                }
            }
        }
    }
    if !found && named.is_some() {
        return Err(format!(
            "AWS_PROFILE={name}, but neither {} nor {} has that profile",
            config_file.display(),
            creds_file.display()
        ));
    }
    Ok(p)
}

/// The first source of the chain that is configured; `Err` names the chain when none is.
pub fn source(
    env: &impl Fn(&str) -> Option<String>,
    profile: &Profile,
    region: &str,
) -> Result<CredentialSource, String> {
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        let creds = match env("AWS_SESSION_TOKEN") {
            Some(t) => Credentials::new_with_token(key, secret, t),
            None => Credentials::new(key, secret),
        };
        return Ok(CredentialSource::Static {
            creds,
            from: "the environment".into(),
        });
    }
    if let (Some(token_file), Some(role_arn)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        let sts = env("AWS_ENDPOINT_URL_STS")
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
        return Ok(CredentialSource::WebIdentity {
            token_file: token_file.into(),
            role_arn,
            session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "petrify".into()),
            sts,
        });
    }
    if let (Some(key), Some(secret)) = (&profile.key, &profile.secret) {
        let creds = match &profile.token {
            Some(t) => Credentials::new_with_token(key, secret, t),
            None => Credentials::new(key, secret),
        };
        return Ok(CredentialSource::Static {
            creds,
            from: profile.from.clone(),
        });
    }
    if let Some(command) = &profile.process {
        return Ok(CredentialSource::Process {
            command: command.clone(),
            profile: profile.name.clone(),
        });
    }
    let container = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .map(|rel| format!("http://169.254.170.2{rel}"))
        .or_else(|| env("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    if let Some(url) = container {
        return Ok(CredentialSource::Container {
            url,
            token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
        });
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                    AWS_SESSION_TOKEN for temporary ones), a profile in ~/.aws (AWS_PROFILE), \
                    web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN) or a container \
                    endpoint; the instance metadata service is disabled \
                    (AWS_EC2_METADATA_DISABLED)"
                .into(),
        );
    }
    Ok(CredentialSource::Instance {
        endpoint: env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into()),
    })
}

/// The `key = value` pairs of `[section]` in an INI file, if it has that section.
fn ini_section(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut inside = false;
    let mut seen = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            seen |= inside;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    seen.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_chain_in_the_sdks_order() {
        let dir = std::env::temp_dir().join(format!("petrify-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config");
        let creds = dir.join("credentials");
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile ops]\nregion=us-west-2\n\
             credential_process = /bin/echo '{}'\n",
        )
        .unwrap();
        std::fs::write(
            &creds,
            "# keys\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        let files = [
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ];
        let kind = |extra: &[(&str, &str)]| {
            let mut all = files.to_vec();
            all.extend_from_slice(extra);
            let env = env_of(&all);
            let p = profile(&env).unwrap();
            match source(&env, &p, "us-east-1") {
                Ok(CredentialSource::Static { from, .. }) => format!("static: {from}"),
                Ok(CredentialSource::WebIdentity { sts, .. }) => format!("web identity: {sts}"),
                Ok(CredentialSource::Process { profile, .. }) => format!("process: {profile}"),
                Ok(CredentialSource::Container { url, .. }) => format!("container: {url}"),
                Ok(CredentialSource::Instance { endpoint }) => format!("instance: {endpoint}"),
                Err(e) => format!("none: {e}"),
            }
        };
        assert_eq!(
            kind(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]),
            "static: the environment"
        );
        assert_eq!(
            kind(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
                ("AWS_ROLE_ARN", "arn")
            ]),
            "web identity: https://sts.us-east-1.amazonaws.com/"
        );
        assert!(kind(&[]).starts_with("static: profile default in "));
        assert_eq!(kind(&[("AWS_PROFILE", "ops")]), "process: ops");
        let ops = [("AWS_PROFILE", "ops"), files[0], files[1]];
        let env = env_of(&ops);
        assert_eq!(profile(&env).unwrap().region.as_deref(), Some("us-west-2"));
        let nope = [("AWS_PROFILE", "nope"), files[0], files[1]];
        assert!(profile(&env_of(&nope)).is_err());
        let none = [("HOME", "/nonexistent")];
        let k = |extra: &[(&str, &str)]| {
            let mut all = none.to_vec();
            all.extend_from_slice(extra);
            let env = env_of(&all);
            match source(&env, &profile(&env).unwrap(), "us-east-1") {
                Ok(CredentialSource::Container { url, token, .. }) => format!("{url} {token:?}"),
                Ok(CredentialSource::Instance { endpoint }) => endpoint,
                Ok(_) => "other".into(),
                Err(e) => e,
            }
        };
        assert_eq!(
            k(&[
                ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds"),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "t")
            ]),
            "http://169.254.170.2/v2/creds Some(\"t\")"
        );
        assert_eq!(k(&[]), "http://169.254.169.254");
        assert!(k(&[("AWS_EC2_METADATA_DISABLED", "true")]).starts_with("no credentials"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
