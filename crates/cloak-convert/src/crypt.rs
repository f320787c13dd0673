//! What `encrypt` and `decrypt` share: the transfer (input, output, registry settings,
//! parallelism), the key material, opening a layer's wrapped keys, and bounded parallelism.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cloak_crypt::keyprovider::Config as ProviderConfig;
use cloak_crypt::keys::{KeySpec, PrivateKey};
use cloak_crypt::keywrap;
use cloak_image::copy::{copy_blob, Progress};
use cloak_image::image::{Dest, Image, RawManifest, Source};
use cloak_image::spec::Descriptor;
use cloak_image::{Digest, ImageRef, PlatformSpec, RegistryOptions};

use crate::error::{Error, Result};

/// What every image-to-image crypto operation (`encrypt`, `decrypt`) needs to read and write.
pub struct Transfer {
    /// Input image.
    pub input: ImageRef,
    /// Where to write the result.
    pub output: ImageRef,
    /// Registry settings of the input.
    pub source_options: RegistryOptions,
    /// Registry settings of the output.
    pub dest_options: RegistryOptions,
    /// Platform selected from a multi-arch input.
    pub platform: PlatformSpec,
    /// Parallel layer workers (0 = one per CPU).
    pub jobs: usize,
    /// Progress sink.
    pub progress: Arc<dyn Progress>,
}

/// The keys at hand for opening recipients.
#[derive(Debug, Default, Clone)]
pub struct KeyMaterial {
    /// Private keys (each tried against every recipient).
    pub keys: Vec<KeySpec>,
    /// Keyprovider configuration file (else `$OCICRYPT_KEYPROVIDER_CONFIG`).
    pub provider_config: Option<PathBuf>,
}

impl KeyMaterial {
    /// Read the keys and the provider configuration.
    pub(crate) fn load(&self) -> Result<(Vec<PrivateKey>, ProviderConfig)> {
        let keys = self
            .keys
            .iter()
            .map(|k| PrivateKey::from_spec(k).map_err(Error::Crypt))
            .collect::<Result<Vec<_>>>()?;
        let providers =
            ProviderConfig::load(self.provider_config.as_deref()).map_err(Error::Crypt)?;
        Ok((keys, providers))
    }
}

/// A metadata error naming the layer.
pub(crate) fn meta(layer: &Descriptor, reason: impl Into<String>) -> Error {
    Error::Crypt(cloak_crypt::Error::Metadata {
        layer: layer.digest.to_string(),
        reason: reason.into(),
    })
}

/// Unwrap a layer's private options with the keys and providers at hand.
pub(crate) fn open_layer(
    desc: &Descriptor,
    keys: &[PrivateKey],
    providers: &ProviderConfig,
) -> Result<Vec<u8>> {
    let missing = || {
        Error::Crypt(cloak_crypt::Error::MissingKey {
            layer: desc.digest.to_string(),
            recipients: keywrap::describe(&desc.annotations),
            keys: keys.len(),
        })
    };
    match keywrap::unwrap(&desc.annotations, keys, providers) {
        Ok(Some(opened)) => Ok(opened.privopts),
        Ok(None) => Err(missing()),
        Err(cloak_crypt::Error::Provider { name, reason }) => {
            Err(Error::Crypt(cloak_crypt::Error::Provider { name, reason }))
        }
        Err(e) => Err(meta(
            desc,
            format!("{e}; and no key given opens another entry"),
        )),
    }
}

/// Run `futures` with at most `jobs` at once, keeping their order.
pub(crate) async fn bounded<T, F>(jobs: usize, futures: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    use futures_util::stream::StreamExt;
    futures_util::stream::iter(futures)
        .buffered(jobs.max(1))
        .collect()
        .await
}

pub(crate) fn worker_count(jobs: usize) -> usize {
    if jobs > 0 {
        jobs
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// Write the result: the config and every layer (staged files moved into place, the others
/// copied from `src`; a digest that appears twice is written once), then the manifest, which is what makes the image visible. Returns
/// the destination's description.
pub(crate) async fn write_image(
    t: &Transfer,
    src: &Source,
    image: &Image,
    layers: &[Descriptor],
    staged: &BTreeMap<Digest, PathBuf>,
    manifest: &RawManifest,
) -> Result<String> {
    let dst = Dest::open(&t.output, &t.dest_options).await?;
    copy_blob(src, &dst, &image.manifest.config, &t.progress).await?;
    // Layers often repeat (empty layers, a file added twice): each blob is written once. A
    // staged file is moved into an OCI layout, so it would not be there the second time.
    let mut written = std::collections::BTreeSet::new();
    for l in layers {
        if !written.insert(l.digest) {
            continue;
        }
        match staged.get(&l.digest) {
            Some(path) => dst.put_file(l, path).await?,
            None => {
                copy_blob(src, &dst, l, &t.progress).await?;
            }
        }
    }
    dst.commit(manifest).await?;
    Ok(dst.describe())
}
