//! The engine conformance suite, run against a real broker (tansu, via scripts/dev-broker).
//! The capability group (status, stats, cancel, dead-letter list, cron) comes with the Kafka
//! engine's part 2; see docs/kafka-engine.md.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_conformance::{engine_conformance_tests, EngineHarness, EngineSite};
use conveyor_core::Engine;
use conveyor_kafka::{KafkaConfig, KafkaEngine};

struct KafkaHarness;

struct KafkaSite {
    config: KafkaConfig,
}

#[async_trait]
impl EngineSite for KafkaSite {
    async fn engine(&self) -> Arc<dyn Engine> {
        Arc::new(
            KafkaEngine::connect(self.config.clone())
                .await
                .expect("connect to the test broker"),
        )
    }
}

#[async_trait]
impl EngineHarness for KafkaHarness {
    async fn engine_site(&self) -> Box<dyn EngineSite> {
        Box::new(KafkaSite {
            config: support::fresh_config(3),
        })
    }
}

engine_conformance_tests!(KafkaHarness);
