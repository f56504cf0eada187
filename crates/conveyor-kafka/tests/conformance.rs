//! The conformance suite, run against a real broker (tansu, via scripts/dev-broker): the core
//! engine group and the observation group (statistics from offsets, the dead-letter list with
//! its retry and purge, cron). The other capabilities (status by id, cancel, queue purge) come
//! with the Kafka engine's part 2; see docs/kafka-engine.md.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_conformance::{
    engine_conformance_tests, observe_conformance_tests, EngineHarness, EngineSite, ObserveHarness,
    ObserveSite,
};
use conveyor_core::{DeadLetterList, DeadLetters, Engine, Schedules, Statistics};
use conveyor_kafka::{KafkaConfig, KafkaEngine};

struct KafkaHarness;

struct KafkaSite {
    config: KafkaConfig,
}

impl KafkaSite {
    async fn connect(&self) -> Arc<KafkaEngine> {
        Arc::new(
            KafkaEngine::connect(self.config.clone())
                .await
                .expect("connect to the test broker"),
        )
    }
}

#[async_trait]
impl EngineSite for KafkaSite {
    async fn engine(&self) -> Arc<dyn Engine> {
        self.connect().await
    }
}

#[async_trait]
impl ObserveSite for KafkaSite {
    async fn statistics(&self) -> Arc<dyn Statistics> {
        self.connect().await
    }
    async fn dead_letter_list(&self) -> Arc<dyn DeadLetterList> {
        self.connect().await
    }
    async fn dead_letters(&self) -> Arc<dyn DeadLetters> {
        self.connect().await
    }
    async fn schedules(&self) -> Arc<dyn Schedules> {
        self.connect().await
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

#[async_trait]
impl ObserveHarness for KafkaHarness {
    async fn observe_site(&self) -> Box<dyn ObserveSite> {
        Box::new(KafkaSite {
            config: support::fresh_config(3),
        })
    }
}

engine_conformance_tests!(KafkaHarness);
observe_conformance_tests!(KafkaHarness);
