//! A configuration generation: everything Sluice compiles from one load of the
//! configuration file (policy tables, masking profiles and field rules,
//! upstream TLS client configurations), built once per load off the data path
//! and swapped per shard on reload. Sessions hold the generation they started
//! with for what they set up once, so a session never compiles anything.

use std::sync::Arc;

use sluice_config::policy::CompiledPolicy;
use sluice_config::{Config, Protocol, Target};
use sluice_masking::json::FieldRules;
use sluice_masking::{Entity, Profile};
use sluice_protocols::sql::columns::Protected;

/// One compiled configuration, built once per load. Each shard installs its
/// own copy ([`Generation::for_shard`]).
pub struct Generation {
    /// Counts loads: 0 at start, then one more per successful reload.
    pub number: u64,
    pub config: Arc<Config>,
    pub policy: CompiledPolicy,
    /// One per `config.targets` entry, in the same order.
    targets: Arc<[TargetPlan]>,
}

/// What one target's sessions use, compiled from its settings.
#[derive(Clone)]
pub struct TargetPlan {
    /// The configuration load this plan was compiled in ([`Generation::number`]).
    pub generation: u64,
    /// The masking profile, with the injected credential among its entities;
    /// `None` when the target has no profile.
    pub masking: Option<Profile>,
    /// The injected credential alone, for what masking does not read and for
    /// targets without a profile; `None` when nothing is injected.
    pub secrets: Option<Profile>,
    /// JSON field rules (the profile's fields, and its columns as key names).
    pub fields: Arc<FieldRules>,
    /// PostgreSQL: what strict column rules protect before a login reads the
    /// catalog (the profile's column names; every relation counts), or
    /// `None` when the target has no column rules or `strict_columns = false`.
    pub strict: Option<Arc<Protected>>,
    /// How to reach the upstream over TLS; `None` for plain TCP.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Generation {
    /// Compiles a validated configuration; `Err` names the target and what failed.
    pub fn compile(config: Arc<Config>, number: u64) -> Result<Generation, String> {
        let policy = CompiledPolicy::compile(&config)?;
        let targets = config
            .targets
            .iter()
            .map(|t| {
                TargetPlan::compile(&config, t, number)
                    .map_err(|e| format!("target `{}`: {e}", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Generation {
            number,
            config,
            policy,
            targets: targets.into(),
        })
    }

    /// This shard's own copy: the policy tables, and the profiles with their
    /// own pattern caches (a regex shared between threads would take a lock
    /// on every search from all but its first user).
    pub fn for_shard(&self) -> Generation {
        Generation {
            number: self.number,
            config: self.config.clone(),
            policy: self.policy.clone(),
            targets: self.targets.iter().map(TargetPlan::for_shard).collect(),
        }
    }

    /// A target by name, with its plan.
    pub fn target(&self, name: &str) -> Option<(&Target, &TargetPlan)> {
        let i = self.config.targets.iter().position(|t| t.name == name)?;
        Some((&self.config.targets[i], &self.targets[i]))
    }
}

impl TargetPlan {
    fn for_shard(&self) -> TargetPlan {
        let own = |p: &Profile| p.clone().with_entities(p.entities().to_vec());
        TargetPlan {
            masking: self.masking.as_ref().map(own),
            secrets: self.secrets.as_ref().map(own),
            ..self.clone()
        }
    }

    fn compile(config: &Config, target: &Target, generation: u64) -> Result<TargetPlan, String> {
        if target.protocol == Protocol::Ssh {
            // Read now, so a broken pin fails the load, not the first login.
            crate::upstream::ssh_host_keys(target)?;
        }
        let profile = masking_profile(config, target).map_err(|e| format!("masking: {e}"))?;
        let secret = credential_entity(target)
            .map_err(|e| format!("the injected credential cannot be kept from clients: {e}"))?;
        let settings = target.masking.as_ref().and_then(|m| config.masking.get(m));
        let fields = match settings {
            Some(p) => {
                // JSON field paths, and column rules as key names.
                let rules: Vec<(&str, &str)> = p
                    .fields
                    .iter()
                    .chain(&p.columns)
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                FieldRules::with_key(&rules, p.hash_key)
            }
            None => FieldRules::new(&[]),
        }
        .map_err(|e| format!("masking: {e}"))?;
        let with_secret = |profile: Profile| match &secret {
            Some(e) => {
                let mut entities = profile.entities().to_vec();
                entities.push(e.clone());
                profile.with_entities(entities)
            }
            None => profile,
        };
        let secrets = match &secret {
            Some(e) => Some(
                Profile::new(&[], &[])
                    .map_err(|e| e.to_string())?
                    .with_entities(vec![e.clone()]),
            ),
            None => None,
        };
        Ok(TargetPlan {
            generation,
            masking: profile.map(with_secret),
            secrets,
            fields: Arc::new(fields),
            strict: strict_columns(config, target).map(Arc::new),
            upstream_tls: crate::tls::upstream_config(target)?,
        })
    }
}

/// The target's masking profile (detectors and column rules), if it has one.
pub fn masking_profile(config: &Config, target: &Target) -> Result<Option<Profile>, String> {
    let Some(name) = &target.masking else {
        return Ok(None);
    };
    let Some(p) = config.masking.get(name) else {
        return Err(format!("masking profile `{name}` is missing"));
    };
    let detectors: Vec<&str> = p.detectors.iter().map(String::as_str).collect();
    let columns: Vec<(&str, &str)> = p
        .columns
        .iter()
        .map(|(c, s)| (c.as_str(), s.as_str()))
        .collect();
    Profile::with_key(&detectors, &columns, p.hash_key)
        .map(|profile| Some(profile.with_entities(p.entities.clone())))
        .map_err(|e| e.to_string())
}

/// The credential Sluice injects upstream, as an entity every response is read
/// for: it never reaches a client, should the upstream echo it (an error,
/// `pg_stat_activity` of an `ALTER ROLE`, a debug endpoint).
fn credential_entity(target: &Target) -> Result<Option<Entity>, String> {
    let Some(c) = &target.credentials else {
        return Ok(None);
    };
    let forms = match target.protocol {
        Protocol::Http => match &c.value {
            Some(v) => credential_forms(v.expose()),
            None => return Ok(None),
        },
        _ => match &c.password {
            Some(p) => vec![p.expose().as_bytes().to_vec()],
            None => return Ok(None),
        },
    };
    let forms: Vec<&[u8]> = forms.iter().map(Vec::as_slice).collect();
    Entity::secrets("credential", &forms).map_err(|e| e.to_string())
}

/// The value Sluice injects into HTTP requests, in the forms an upstream may
/// echo it in: the whole value, the token after its scheme (`Bearer x`), and
/// for `Basic` the decoded `user:password` and the password (each also
/// percent-encoded or JSON-escaped, see [`Entity::secrets`]).
pub fn credential_forms(value: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![value.as_bytes().to_vec()];
    if let Some((scheme, token)) = value.split_once(' ') {
        let token = token.trim();
        forms.push(token.as_bytes().to_vec());
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
            use base64::Engine as _;
            // With or without padding, as servers accept it.
            let lenient = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            if let Ok(decoded) = lenient.decode(token) {
                if let Some(i) = decoded.iter().position(|&b| b == b':') {
                    forms.push(decoded[i + 1..].to_vec());
                }
                forms.push(decoded);
            }
        }
    }
    forms
}

/// The target's masking profile, if it has strict column rules (column rules,
/// and `strict_columns` not turned off).
fn strict_profile<'c>(
    config: &'c sluice_config::Config,
    target: &Target,
) -> Option<&'c sluice_config::MaskingProfile> {
    let m = config.masking.get(target.masking.as_ref()?)?;
    (m.strict_columns && !m.columns.is_empty()).then_some(m)
}

/// Strict column rules on this target: what they protect before the catalog
/// is read (the profile's column names; every relation counts), or `None`
/// when the target has no column rules or `strict_columns = false`.
fn strict_columns(
    config: &sluice_config::Config,
    target: &Target,
) -> Option<sluice_protocols::sql::columns::Protected> {
    let m = strict_profile(config, target)?;
    let mut columns: Vec<sluice_protocols::sql::columns::Name> = m
        .columns
        .keys()
        .map(|c| {
            let name = c.rsplit('.').next().unwrap_or(c);
            name.to_ascii_lowercase().into_bytes().into_boxed_slice()
        })
        .collect();
    columns.sort();
    columns.dedup();
    Some(sluice_protocols::sql::columns::Protected {
        columns,
        relations: None,
        views: Vec::new(),
        relation_columns: Vec::new(),
    })
}
