<?php
// A php-gearman (libgearman) worker for gearshard's interop tests.
//
// Usage: php php_worker.php HOST PORT CLIENT_ID FUNC
//
// For every job it sends WORK_STATUS 1/2 and WORK_DATA "chunk:ARG", prints
// "start ARG", waits for one line on stdin (EOF exits), prints "end ARG"
// and returns strtoupper(ARG). The test knows the worker is registered by
// polling the server's "workers" admin output for CLIENT_ID.
[, $host, $port, $id, $func] = $argv;
$w = new GearmanWorker();
$w->addServer($host, (int)$port);
$w->setId($id);
$w->addFunction($func, function (GearmanJob $job) {
    $arg = $job->workload();
    $job->sendStatus(1, 2);
    $job->sendData("chunk:" . $arg);
    echo "start $arg\n";
    if (fgets(STDIN) === false) {
        exit(0);
    }
    echo "end $arg\n";
    return strtoupper($arg);
});
while ($w->work()) {
}
fwrite(STDERR, "work: " . $w->error() . "\n");
exit(1);
