<?php

declare(strict_types=1);

use Conveyor\Jobs\Consumer;
use Conveyor\Jobs\Task\ReceivedTaskInterface;

require __DIR__ . '/vendor/autoload.php';

// Load environment
if (file_exists(__DIR__ . '/.env')) {
    $dotenv = Dotenv\Dotenv::createImmutable(__DIR__);
    $dotenv->load();
}

// Initialize job handlers
$faceComparisonJob = new Services\FaceComparisonJob();

// Create consumer - RoadRunner handles Kafka connection
$consumer = new Consumer();

error_log("[Jobs Worker] Started and waiting for jobs...");

// Main loop
while ($task = $consumer->waitTask()) {
    try {
        $taskName = $task->getName();
        $payload = json_decode($task->getPayload(), true);

        switch ($taskName) {
            case 'face-comparison':
                handleFaceComparison($task, $payload, $faceComparisonJob);
                break;

            default:
                error_log("[Jobs Worker] Unknown job type: {$taskName}");
                $task->fail("Unknown job type: {$taskName}");
        }

    } catch (\Throwable $e) {
        error_log(sprintf(
            "[Jobs Worker ERROR] %s in %s:%d",
            $e->getMessage(),
            $e->getFile(),
            $e->getLine()
        ));

        $task->fail($e->getMessage());
    }
}

function handleFaceComparison(
    ReceivedTaskInterface $task,
    array $payload,
    Services\FaceComparisonJob $handler
): void {
    try {
        $result = $handler->handle($payload);
        if ($result['success']) {
            $task->complete();
        } else {
            $task->fail($result['error'] ?? 'Unknown error');
        }
    } catch (\Exception $e) {
        $task->fail($e->getMessage());
    }
}
