<?php

declare(strict_types=1);

namespace Conveyor\Jobs\Task;

use Conveyor\Jobs\Consumer;

/** A job line from Conveyor, answered exactly once. */
final class ReceivedTask implements ReceivedTaskInterface
{
    private bool $answered = false;

    public function __construct(private readonly Consumer $consumer, private readonly \stdClass $message)
    {
    }

    public function getId(): string
    {
        return (string) $this->message->id;
    }

    public function getName(): string
    {
        return (string) $this->message->kind;
    }

    public function getQueue(): string
    {
        return (string) $this->message->queue;
    }

    public function getPayload(): string
    {
        $payload = $this->message->payload ?? null;
        if (is_string($payload)) {
            return $payload;
        }
        return json_encode($payload, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    }

    public function getHeaders(): array
    {
        return (array) ($this->message->headers ?? []);
    }

    public function getAttempt(): int
    {
        return (int) $this->message->attempt;
    }

    public function progress(mixed $progress): void
    {
        $this->consumer->send(['type' => 'progress', 'progress' => $progress]);
    }

    public function complete(): void
    {
        $this->answer(['type' => 'complete']);
    }

    public function fail(string|\Stringable|\Throwable $error, bool $retry = false, ?int $delayMs = null): void
    {
        $text = $error instanceof \Throwable ? $error->getMessage() : (string) $error;
        $line = ['type' => 'fail', 'error' => $text, 'retry' => $retry];
        if ($delayMs !== null) {
            $line['delay_ms'] = $delayMs;
        }
        $this->answer($line);
    }

    /** @internal */
    public function isAnswered(): bool
    {
        return $this->answered;
    }

    private function answer(array $line): void
    {
        if ($this->answered) {
            throw new \LogicException("job {$this->getId()} was already answered");
        }
        $this->answered = true;
        $this->consumer->send($line);
    }
}
