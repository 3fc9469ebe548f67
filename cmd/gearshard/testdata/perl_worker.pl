#!/usr/bin/perl
# A Gearman::Worker (libgearman-client-perl) for gearshard's interop tests.
#
# Usage: perl_worker.pl HOST:PORT CLIENT_ID MODE FUNC [FUNC...]
#
# For every job it prints "start FUNC ARG" when the job begins and
# "end FUNC ARG" when it returns "done:ARG". MODE:
#   echo    return at once
#   block   wait for one line on stdin before returning (EOF exits)
#   status  send WORK_STATUS 1/2 and WORK_DATA "chunk:ARG", print "start",
#           then wait for one line on stdin like block
#   exception  send WORK_EXCEPTION "boom:ARG" instead of a result
#   sleep   take 0.2 s, then return
# MODE:T registers the functions with timeout T (CAN_DO_TIMEOUT), which
# Gearman::Worker documents as seconds.
# The test knows the worker is registered by polling the server's
# "workers" admin output for CLIENT_ID.
use strict;
use warnings;
use Gearman::Worker;

$| = 1;
my ($server, $id, $mode, @funcs) = @ARGV;
die "usage: $0 HOST:PORT CLIENT_ID echo|block|status|exception|sleep[:T] FUNC...\n"
    unless @funcs && $mode =~ /^(echo|block|status|exception|sleep)(?::(\d+))?$/;
($mode, my $timeout) = ($1, $2);

my $worker = Gearman::Worker->new(job_servers => [$server], client_id => $id);
for my $f (@funcs) {
    $worker->register_function(
        $f,
        (defined $timeout ? ($timeout) : ()),
        sub {
            my $job = shift;
            my $arg = $job->arg;
            if ($mode eq 'status') {
                $job->set_status(1, 2);
                $worker->send_work_data($job, "chunk:$arg");
            }
            print "start $f $arg\n";
            if ($mode eq 'exception') {
                $worker->send_work_exception($job, "boom:$arg");
                print "end $f $arg\n";
                return;
            }
            if ($mode eq 'sleep') {
                select(undef, undef, undef, 0.2);
            }
            elsif ($mode ne 'echo') {
                my $line = <STDIN>;
                exit 0 unless defined $line;
            }
            print "end $f $arg\n";
            return "done:$arg";
        }
    ) or die "register_function $f failed\n";
}
$worker->work while 1;
