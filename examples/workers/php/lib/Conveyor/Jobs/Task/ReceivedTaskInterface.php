<?php

declare(strict_types=1);

namespace Conveyor\Jobs\Task;

/** A job handed to this worker, as RoadRunner's ReceivedTaskInterface names its methods. */
interface ReceivedTaskInterface
{
    /** The job id. */
    public function getId(): string;

    /** The job's kind (RoadRunner's task name). */
    public function getName(): string;

    /** The job's queue (RoadRunner's pipeline). */
    public function getQueue(): string;

    /** The payload as JSON text (decode it with json_decode). */
    public function getPayload(): string;

    /** Job headers (reserved: empty in protocol version 1). */
    public function getHeaders(): array;

    /** This attempt's number, from 1. */
    public function getAttempt(): int;

    /** Stores any JSON-encodable value as the job's progress. */
    public function progress(mixed $progress): void;

    /** The job is done. */
    public function complete(): void;

    /**
     * The attempt failed. With $retry false (the default, as RoadRunner's $requeue) the job is
     * dead-lettered with $error at once; with true it is retried by the job's policy, after
     * $delayMs milliseconds when given.
     */
    public function fail(string|\Stringable|\Throwable $error, bool $retry = false, ?int $delayMs = null): void;
}
