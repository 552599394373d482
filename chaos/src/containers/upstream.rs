//! Other images for a component (`--image redis=redis:7.2`): what a user deploys, where a
//! registry is reachable, in place of the image flashlab builds.
//!
//! A component run from another image is given the same command and environment as from
//! flashlab's own, so the image must run them:
//!
//! | component | accepts | why |
//! |---|---|---|
//! | `redis` | `redis` (the official image, 7.x) or any image whose entrypoint runs `redis-server` with arguments that start with `--`, and a config file first for a sentinel | its entrypoint puts `redis-server` in front of arguments that start with `-` or a first argument ending in `.conf`, and hands `/data` to its own user |
//! | `broker` | `tansu` images (`ghcr.io/tansu-io/tansu`) | the command is tansu's (`broker --listener-url …`); `apache/kafka` takes KRaft settings in its environment instead — not built |
//! | `flashsale` | the user's own build of `flashsale` | the same subcommands (`gateway`, `processor`, `payment`) and environment |
//!
//! An image the engine does not have is pulled (`docker pull`, bounded); a pull that fails is an
//! error before anything of the run is created.

use super::images::{docker, Component, ImageError};

/// `COMPONENT=IMAGE` (`redis=redis:7.2`), as `--image` takes it.
pub fn parse_choice(text: &str) -> Result<(Component, String), String> {
    let (component, image) =
        text.split_once('=').ok_or_else(|| format!("{text:?}: expected COMPONENT=IMAGE, e.g. redis=redis:7.2"))?;
    let component = Component::parse(component.trim())
        .ok_or_else(|| format!("{text:?}: unknown component {component:?} (flashsale, redis, broker)"))?;
    let image = image.trim();
    if image.is_empty() || image.contains(char::is_whitespace) || image.starts_with('-') {
        return Err(format!("{text:?}: {image:?} is not an image name"));
    }
    Ok((component, image.to_string()))
}

/// Makes sure the engine has `image`: it has it, or `docker pull` brings it (bounded by the
/// `docker` commands' timeout). The error says the pull failed and why (no registry reachable,
/// no such image).
pub fn ensure_present(component: Component, image: &str) -> Result<(), ImageError> {
    let inspect = ["image", "inspect", "--format", "{{.Id}}", image].map(String::from);
    if docker(&inspect, None).is_ok() {
        return Ok(());
    }
    docker(&["pull".to_string(), "--quiet".into(), image.to_string()], None).map(drop).map_err(|e| ImageError::Pull {
        choice: format!("{}={image}", component.name()),
        why: match e {
            ImageError::Docker { why, .. } => why,
            other => other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_choice_names_a_component_and_an_image() {
        assert_eq!(parse_choice("redis=redis:7.2"), Ok((Component::Redis, "redis:7.2".into())));
        assert_eq!(
            parse_choice("broker=ghcr.io/tansu-io/tansu:0.6.0"),
            Ok((Component::Broker, "ghcr.io/tansu-io/tansu:0.6.0".into()))
        );
        assert!(parse_choice("redis").unwrap_err().contains("expected COMPONENT=IMAGE"));
        assert!(parse_choice("kafka=apache/kafka:3.9.0").unwrap_err().contains("unknown component"));
        assert!(parse_choice("redis=").unwrap_err().contains("not an image name"));
        assert!(parse_choice("redis=a b").unwrap_err().contains("not an image name"));
    }
}
