<?php

// Stands in for Composer's autoloader, so the seed's `require __DIR__ . '/vendor/autoload.php'`
// line works unchanged. With Composer, autoload lib/ as PSR-4 "Conveyor\\" instead.
require __DIR__ . '/../lib/autoload.php';
