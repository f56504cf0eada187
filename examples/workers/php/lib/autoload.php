<?php

declare(strict_types=1);

// Class loading for the Conveyor PHP worker library (Conveyor\...) and this example's own
// classes (Services\...), without Composer: PSR-4 from lib/ and src/.
spl_autoload_register(static function (string $class): void {
    foreach (['Conveyor\\' => __DIR__ . '/Conveyor/', 'Services\\' => __DIR__ . '/../src/Services/'] as $prefix => $dir) {
        if (str_starts_with($class, $prefix)) {
            $file = $dir . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
            if (is_file($file)) {
                require $file;
            }
            return;
        }
    }
});
