//! `telemine train --input FILE`: the configured models, trained on the
//! feature rows their views compute from recorded data.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use telemine_detector::Detector;
use telemine_model::{DeviceChoice, Scorer, TrainOptions, pick_device};
use telemine_observe::metrics::Metrics;
use telemine_stream::local::LocalRun;

use crate::cli::Recorded;

pub struct TrainCommand {
    pub recorded: Recorded,
    pub model: Option<String>,
    pub out: Option<PathBuf>,
    pub epochs: usize,
    pub device: String,
}

pub async fn train(opts: TrainCommand) -> anyhow::Result<ExitCode> {
    let input = &opts.recorded;
    let Some((cfg, mut sql)) = super::load(&input.config, input.sql.as_deref()).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let models: Vec<_> = cfg
        .models
        .iter()
        .filter(|m| opts.model.as_ref().is_none_or(|n| m.name.get_ref() == n))
        .collect();
    if models.is_empty() {
        anyhow::bail!(match &opts.model {
            Some(n) => format!("--model {n}: no such model in {}", input.config.display()),
            None => format!(
                "{} configures no [[models]]: nothing to train",
                input.config.display()
            ),
        });
    }
    if opts.out.is_some() && models.len() > 1 {
        anyhow::bail!("--out names one checkpoint: say which model with --model");
    }
    let choice: DeviceChoice = opts.device.parse().map_err(anyhow::Error::msg)?;
    let (device, note) = pick_device(choice);
    if let Some(note) = note {
        telemine_observe::note!("train: {note}");
    }
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    let source = super::pick_source(&defs, input.source.as_deref(), &input.config)?;
    // The feature views run over the recording; the models' views record
    // their rows instead of being scored.
    let recorders: Vec<Arc<Detector>> = models
        .iter()
        .map(|m| {
            let r = Arc::new(Detector::recorder(
                m.settings().map_err(anyhow::Error::msg)?,
            ));
            sql.attach_scorer(m.view.get_ref(), r.clone());
            Ok(r)
        })
        .collect::<anyhow::Result<_>>()?;
    let recorded = telemine::recorded::read(&input.input, &defs[source])?;
    let rows: usize = recorded.batches.iter().map(|b| b.num_rows()).sum();
    let mut run = LocalRun::new(sql, &defs, Arc::new(Metrics::default()))?;
    for batch in recorded.batches {
        run.push_batch(source, 0, batch).await?;
    }
    run.finish().await?;
    telemine_observe::note!(
        "train: {rows} records from {} ({} not decoded)",
        input.input.display(),
        recorded.dead.len()
    );
    for (m, recorder) in models.iter().zip(&recorders) {
        let name = m.name.get_ref();
        let settings = recorder.settings();
        let features = settings.model_features.clone();
        let Some(kind) = settings.kind.clone() else {
            anyhow::bail!(
                "model `{name}`: the profile detector fits each series on its own first windows as it runs; there is nothing for `telemine train` to train"
            );
        };
        let (frame, keys) = recorder.take_rows().map_err(anyhow::Error::msg)?;
        let bar = super::progress_bar(opts.epochs as u64, format!("train {name}"), "epoch ")?;
        let options = TrainOptions {
            epochs: opts.epochs,
            ..TrainOptions::default()
        };
        let mut scorer =
            Scorer::train(kind, features, &frame, &keys, &options, &device, &mut |p| {
                bar.set_position(p.epoch as u64);
                bar.set_message(format!("loss {:.4}", p.loss));
            })
            .map_err(|e| anyhow::anyhow!("model `{name}` on view `{}`: {e}", m.view.get_ref()))?;
        bar.finish();
        let path = opts
            .out
            .clone()
            .or_else(|| m.checkpoint.clone())
            .unwrap_or_else(|| PathBuf::from("models").join(format!("{name}.json")));
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        scorer.save(&path)?;
        let s = scorer.sidecar();
        telemine_observe::note!(
            "train: model `{name}` ({}) on {} feature rows of view `{}` ({} held out to calibrate): loss {:.4}, data hash {} -> {}",
            s.kind.name(),
            s.training.rows,
            m.view.get_ref(),
            s.training.calibration_rows,
            s.training.final_loss,
            s.training.data_hash,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
