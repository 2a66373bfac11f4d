//! The model registry. Each architecture crate implements [`Architecture`]
//! (a name, a serde config, a constructor); one line in memlab-zoo's
//! registry (`memlab_core::architectures!`) makes it available to `memlab train`,
//! `compare`, `bench` and the benchmarks, with nothing else to change.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, Validate, parse_section, take_tag};
use crate::interop::LmRmtLayout;
use crate::layers::TransformerSizes;
use crate::model::{ModelContext, SegmentModel, SegmentOutput};

/// An architecture: its registry name, config type and constructors.
///
/// `Model<B>` is the model on any backend; `TrainModel<B>` is the same type on
/// an autodiff backend, with the bound Burn's optimizers need (in every
/// implementation both are the same struct: `type TrainModel<B> = Model<B>`).
pub trait Architecture: 'static {
    /// Name used in configs (`arch = "..."`) and tables.
    const NAME: &'static str;
    /// One line for `memlab models`.
    const SUMMARY: &'static str;

    /// The `[model]` table, without its `arch` key.
    type Config: Serialize
        + DeserializeOwned
        + Validate
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;

    /// Named settings a `[model]` table can start from with
    /// `preset = "name"`: `(name, TOML fields)`. Fields the table gives
    /// itself override the preset's (e.g. RMT's `"paper"`: LM-RMT's code
    /// path, with the sizes of each experiment given beside it).
    const PRESETS: &'static [(&'static str, &'static str)] = &[];

    /// Tables of the config whose fields a `[model]` table gives flat, as
    /// `(table, its field names)`, beside `transformer`
    /// ([`TransformerSizes::FIELDS`], for every config that has one): e.g.
    /// the ∞-former's long-term memory, written flat in its `[model]`.
    /// Each is filled in from the config's defaults.
    const FLAT_TABLES: &'static [(&'static str, &'static [&'static str])] = &[];

    type Model<B: Backend>: SegmentModel<B>;
    type TrainModel<B: AutodiffBackend>: SegmentModel<B>
        + AutodiffModule<B, InnerModule = Self::Model<B::InnerBackend>>;

    /// Checks the config against the task (e.g. sizes that must agree).
    fn check(config: &Self::Config, ctx: &ModelContext) -> Result<(), ConfigError> {
        let _ = (config, ctx);
        Ok(())
    }

    fn init<B: Backend>(
        config: &Self::Config,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Self::Model<B>;

    /// Where LM-RMT's `MemTransformerLM` (`attn_type 0`) keeps what this
    /// architecture holds under `config`, for `memlab import`, `export` and
    /// `parity`; or why it has no counterpart there.
    fn lm_rmt_layout(config: &Self::Config) -> Result<LmRmtLayout, String> {
        let _ = config;
        Err(format!(
            "`{}` has no counterpart in LM-RMT's MemTransformerLM (transformer-xl and rmt with \
             backbone = \"transformer-xl\" have)",
            Self::NAME
        ))
    }

    /// One segment as `MemTransformerLM._forward` reads it: the model's
    /// output, and the last layer's output at every position of the
    /// (augmented) segment, which LM-RMT caches too (`hids[n_layer]`).
    /// `None` where [`Self::lm_rmt_layout`] has no counterpart.
    #[allow(clippy::type_complexity)]
    fn lm_rmt_forward<B: Backend>(
        model: &Self::Model<B>,
        tokens: Tensor<B, 2, Int>,
        memory: <Self::Model<B> as SegmentModel<B>>::Memory,
    ) -> Option<(
        SegmentOutput<B, <Self::Model<B> as SegmentModel<B>>::Memory>,
        Tensor<B, 3>,
    )> {
        let _ = (model, tokens, memory);
        None
    }

    fn init_train<B: AutodiffBackend>(
        config: &Self::Config,
        ctx: &ModelContext,
        device: &B::Device,
    ) -> Self::TrainModel<B>;
}

/// Parses a `[model]` table (with its `arch` key removed) for architecture `A`.
pub fn parse_model_config<A: Architecture>(
    table: toml::Table,
    ctx: &ModelContext,
) -> Result<A::Config, ConfigError> {
    let table = apply_preset::<A>(table)?;
    let table = nest_flat_tables::<A>(table)?;
    // The nested fields are named as the file gives them: `model.d_model`.
    let config: A::Config =
        parse_section(toml::Value::Table(table), "model").map_err(|mut e| {
            for (name, _) in flat_tables::<A>() {
                if let Some(field) = e.field.strip_prefix(&format!("model.{name}.")) {
                    e.field = format!("model.{field}");
                }
            }
            e
        })?;
    A::check(&config, ctx).map_err(|e| e.within("model"))?;
    Ok(config)
}

/// `transformer` and [`Architecture::FLAT_TABLES`].
fn flat_tables<A: Architecture>() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    std::iter::once(("transformer", TransformerSizes::FIELDS)).chain(A::FLAT_TABLES.iter().copied())
}

/// Moves the fields of each flat table ([`flat_tables`]: the shared
/// Transformer fields, [`TransformerSizes::FIELDS`], and the
/// architecture's own) of a flat `[model]` table into that table of a
/// config that has one, over the architecture's defaults for them; a
/// config without one gets the table as it is.
fn nest_flat_tables<A: Architecture>(mut table: toml::Table) -> Result<toml::Table, ConfigError> {
    let defaults =
        toml::Table::try_from(A::Config::default()).expect("a default config serializes");
    for (name, fields) in flat_tables::<A>() {
        let Some(toml::Value::Table(mut nested)) = defaults.get(name).cloned() else {
            continue;
        };
        match table.remove(name) {
            None => {}
            Some(toml::Value::Table(given)) => nested.extend(given),
            Some(other) => {
                return Err(ConfigError::new(
                    format!("model.{name}"),
                    format!("must be a table, got {}", other.type_str()),
                ));
            }
        }
        for field in fields {
            if let Some(value) = table.remove(*field) {
                nested.insert((*field).to_string(), value);
            }
        }
        table.insert(name.into(), toml::Value::Table(nested));
    }
    Ok(table)
}

/// Expands `preset = "name"` ([`Architecture::PRESETS`]): the preset's
/// fields, then the table's own on top.
pub fn apply_preset<A: Architecture>(mut table: toml::Table) -> Result<toml::Table, ConfigError> {
    let Some(value) = table.remove("preset") else {
        return Ok(table);
    };
    let names: Vec<&str> = A::PRESETS.iter().map(|(n, _)| *n).collect();
    let name = value.as_str().ok_or_else(|| {
        ConfigError::new(
            "model.preset",
            format!("must be a string, got {}", value.type_str()),
        )
    })?;
    let Some((_, fields)) = A::PRESETS.iter().find(|(n, _)| *n == name) else {
        let known = if names.is_empty() {
            format!("{} has none", A::NAME)
        } else {
            format!("known for {}: {}", A::NAME, names.join(", "))
        };
        return Err(ConfigError::new(
            "model.preset",
            format!("unknown preset {name:?}; {known}"),
        ));
    };
    let mut merged = crate::config::parse_toml(fields).expect("a preset is valid TOML");
    merged.extend(table);
    Ok(merged)
}

/// Work that is generic over the architecture: the registry calls
/// `visit::<A>()` with the architecture named in a config.
pub trait ArchitectureVisitor {
    type Output;
    fn visit<A: Architecture>(self) -> Self::Output;
}

/// A model table split into its architecture name, optional row label and
/// the remaining fields.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub arch: String,
    pub label: String,
    pub fields: toml::Table,
}

impl ModelSpec {
    /// Splits `arch` (required) and `label` (optional, defaults to `arch`).
    pub fn from_table(table: &toml::Table, section: &str) -> Result<Self, ConfigError> {
        let (arch, mut fields) = take_tag(table.clone(), "arch", section)?;
        let label = match fields.remove("label") {
            None => arch.clone(),
            Some(toml::Value::String(s)) if !s.is_empty() => s,
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{section}.label"),
                    format!("must be a non-empty string, got {other}"),
                ));
            }
        };
        Ok(Self {
            arch,
            label,
            fields,
        })
    }
}

/// Declares an architecture's registry entry: a unit struct implementing
/// [`Architecture`] whose model is built by its config's
/// `init(ctx, device)` for inference and training alike (the same
/// `Module` struct on any backend). Any further items (`PRESETS`, `check`,
/// `lm_rmt_layout`, ...) follow the fields and go into the impl as written.
///
/// ```ignore
/// memlab_core::architecture! {
///     /// The registry entry.
///     pub struct BaselineArch {
///         name: "baseline",
///         summary: "Transformer decoder with no memory",
///         config: BaselineConfig,
///         model: Baseline,
///     }
/// }
/// ```
#[macro_export]
macro_rules! architecture {
    (
        $(#[$meta:meta])*
        $vis:vis struct $arch:ident {
            name: $name:expr,
            summary: $summary:expr,
            config: $config:ty,
            model: $model:ident $(,)?
        }
        $($items:tt)*
    ) => {
        $(#[$meta])*
        $vis struct $arch;

        impl $crate::registry::Architecture for $arch {
            const NAME: &'static str = $name;
            const SUMMARY: &'static str = $summary;

            type Config = $config;
            type Model<B: $crate::__burn::prelude::Backend> = $model<B>;
            type TrainModel<B: $crate::__burn::tensor::backend::AutodiffBackend> = $model<B>;

            fn init<B: $crate::__burn::prelude::Backend>(
                config: &$config,
                ctx: &$crate::ModelContext,
                device: &B::Device,
            ) -> $model<B> {
                config.init(ctx, device)
            }

            fn init_train<B: $crate::__burn::tensor::backend::AutodiffBackend>(
                config: &$config,
                ctx: &$crate::ModelContext,
                device: &B::Device,
            ) -> $model<B> {
                config.init(ctx, device)
            }

            $($items)*
        }
    };
}

/// Declares the registry: the list of architectures, with `NAMES`,
/// `SUMMARIES`, `check_name(name)` and `dispatch(name, visitor)`.
///
/// ```ignore
/// memlab_core::architectures! {
///     memlab_baseline::Baseline,
/// }
/// ```
#[macro_export]
macro_rules! architectures {
    ($($arch:ty),+ $(,)?) => {
        /// Registry names of every architecture, in registry order.
        pub const NAMES: &[&str] = &[$(<$arch as $crate::registry::Architecture>::NAME),+];

        /// `(name, summary)` of every architecture.
        pub const SUMMARIES: &[(&str, &str)] = &[$((
            <$arch as $crate::registry::Architecture>::NAME,
            <$arch as $crate::registry::Architecture>::SUMMARY,
        )),+];

        /// Runs `visitor` with the architecture called `name`.
        pub fn dispatch<V: $crate::registry::ArchitectureVisitor>(
            name: &str,
            visitor: V,
        ) -> Result<V::Output, $crate::config::ConfigError> {
            $(
                if name == <$arch as $crate::registry::Architecture>::NAME {
                    return Ok(visitor.visit::<$arch>());
                }
            )+
            Err(unknown_architecture(name))
        }

        /// Whether an architecture is called `name` (the error names the known ones).
        pub fn check_name(name: &str) -> Result<(), $crate::config::ConfigError> {
            if NAMES.contains(&name) {
                Ok(())
            } else {
                Err(unknown_architecture(name))
            }
        }

        fn unknown_architecture(name: &str) -> $crate::config::ConfigError {
            $crate::config::ConfigError::new(
                "model.arch",
                format!("unknown architecture {name:?}; known: {}", NAMES.join(", ")),
            )
        }
    };
}
