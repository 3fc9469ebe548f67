<?php
// A php-gearman (libgearman) client for gearshard's interop tests.
//
// Usage:
//   php php_client.php HOST PORT task FUNC ARG [high|normal|low]
//       addTask*/runTasks; prints "status N/D", "data X" as they arrive,
//       then "complete RESULT" or "fail".
//   php php_client.php HOST PORT bg FUNC ARG [high|normal|low]
//       doBackground / doHighBackground / doLowBackground; prints "handle H".
//   php php_client.php HOST PORT status HANDLE [WANT]
//       jobStatus; prints "known=K running=R num=N den=D". With WANT, asks
//       again every 10 ms until the line is WANT (the caller's timeout
//       bounds it), then prints it.
[, $host, $port, $op] = $argv;
$c = new GearmanClient();
$c->addServer($host, (int)$port);

switch ($op) {
case 'status':
    $want = $argv[5] ?? null;
    while (true) {
        [$known, $running, $num, $den] = $c->jobStatus($argv[4]);
        $line = sprintf("known=%d running=%d num=%d den=%d", $known, $running, $num, $den);
        if ($want === null || $line === $want) {
            echo "$line\n";
            exit(0);
        }
        usleep(10000);
    }
case 'bg':
    $pri = $argv[6] ?? 'normal';
    $m = ['high' => 'doHighBackground', 'normal' => 'doBackground', 'low' => 'doLowBackground'][$pri];
    $h = $c->$m($argv[4], $argv[5]);
    if ($c->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "$m: " . $c->error() . "\n");
        exit(1);
    }
    echo "handle $h\n";
    exit(0);
case 'task':
    $pri = $argv[6] ?? 'normal';
    $c->setStatusCallback(function (GearmanTask $t) {
        echo "status {$t->taskNumerator()}/{$t->taskDenominator()}\n";
    });
    $c->setDataCallback(function (GearmanTask $t) { echo "data {$t->data()}\n"; });
    $c->setCompleteCallback(function (GearmanTask $t) { echo "complete {$t->data()}\n"; });
    $c->setFailCallback(function (GearmanTask $t) { echo "fail\n"; });
    $m = ['high' => 'addTaskHigh', 'normal' => 'addTask', 'low' => 'addTaskLow'][$pri];
    $c->$m($argv[4], $argv[5]);
    if (!$c->runTasks()) {
        fwrite(STDERR, "runTasks: " . $c->error() . "\n");
        exit(1);
    }
    exit(0);
}
fwrite(STDERR, "unknown op $op\n");
exit(2);
