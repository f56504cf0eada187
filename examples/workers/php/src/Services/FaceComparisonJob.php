<?php

declare(strict_types=1);

namespace Services;

/** The example's stand-in for the seed's face comparison: the payload says whether it matches. */
final class FaceComparisonJob
{
    /** @return array{success: bool, error?: string} */
    public function handle(array $payload): array
    {
        if (($payload['match'] ?? false) === true) {
            return ['success' => true];
        }
        return ['success' => false, 'error' => 'faces do not match'];
    }
}
