<?php

declare(strict_types=1);

namespace Conveyor\Jobs;

use Conveyor\Jobs\Task\ReceivedTask;
use Conveyor\Jobs\Task\ReceivedTaskInterface;

/**
 * The worker side of a Conveyor pool (protocol version 1, docs/worker-protocol.md), with the
 * API of RoadRunner's Spiral\RoadRunner\Jobs\Consumer: `while ($task = $consumer->waitTask())`.
 *
 * Jobs arrive one JSON line at a time on STDIN; answers go out on STDOUT. Anything the worker
 * code echoes is sent to STDERR (Conveyor's log) so it cannot corrupt the protocol.
 */
final class Consumer
{
    public const PROTOCOL = 1;

    private ?ReceivedTask $current = null;

    public function __construct()
    {
        // echo/print go to stderr: stdout carries the protocol only.
        ob_start(static function (string $buffer): string {
            fwrite(STDERR, $buffer);
            return '';
        }, 1);
        $this->send(['type' => 'ready', 'protocol' => self::PROTOCOL]);
    }

    /** The next job, or null once Conveyor closed STDIN (the worker should exit). */
    public function waitTask(): ?ReceivedTaskInterface
    {
        if ($this->current !== null && !$this->current->isAnswered()) {
            $this->current->fail('the worker asked for the next job without answering this one', true);
        }
        do {
            $line = fgets(STDIN);
            if ($line === false) {
                return null;
            }
        } while (trim($line) === '');
        $message = json_decode($line, false, 512, JSON_THROW_ON_ERROR);
        $this->current = new ReceivedTask($this, $message);
        return $this->current;
    }

    /** @internal Writes one protocol line. */
    public function send(array $line): void
    {
        fwrite(STDOUT, json_encode($line, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR) . "\n");
        fflush(STDOUT);
    }
}
