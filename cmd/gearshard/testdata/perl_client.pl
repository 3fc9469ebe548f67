#!/usr/bin/perl
# A Gearman::Client (libgearman-client-perl) for gearman's interop tests.
#
# Usage:
#   perl_client.pl HOST:PORT do FUNC ARG [uniq=U] [priority=high|normal|low]
#                  [exceptions=1]
#       do_task; prints "status N/D", "data X", "warning X", "exception X"
#       as they arrive, then "complete RESULT" or "fail". exceptions=1 makes
#       the client ask the server for exceptions (OPTION_REQ).
#   perl_client.pl HOST:PORT bg FUNC ARG [uniq=U] [priority=high|normal|low]
#       dispatch_background; prints "handle HANDLE" (HOST:PORT//H:...).
#   perl_client.pl HOST:PORT bgs FUNC ARG@PRIORITY...
#       dispatch_background of each ARG in turn; prints "handle HANDLE" each.
#   perl_client.pl HOST:PORT admin
#       get_job_server_status, get_job_server_jobs, get_job_server_clients
#       (the Perl server's admin commands); prints one sorted line each:
#       "status FUNC queued=Q running=R capable=C",
#       "job FUNC key=K address=A listeners=N",
#       "client ADDR" and "client ADDR waits FUNC key=K worker=A".
#   perl_client.pl HOST:PORT status HANDLE [WANT]
#       get_status; prints "known=K running=R num=N den=D". With WANT, asks
#       again every 10 ms until the line is WANT (the caller's timeout
#       bounds it), then prints it.
use strict;
use warnings;
use Gearman::Client;

$| = 1;
my ($server, $op, @args) = @ARGV;
die "usage: $0 HOST:PORT do|bg|status ...\n" unless defined $op;
my %opt = map { split /=/, $_, 2 } grep {/=/} @args[2 .. $#args];
my $client = Gearman::Client->new(
    job_servers => [$server],
    exceptions  => delete $opt{exceptions} || 0
);

if ($op eq 'status') {
    my ($handle, $want) = @args;
    while (1) {
        my $st = $client->get_status($handle) or die "get_status failed\n";
        my $line = sprintf "known=%s running=%s num=%s den=%s",
            $st->known, $st->running, $st->[2], $st->[3];
        if (!defined $want || $line eq $want) {
            print "$line\n";
            exit 0;
        }
        select(undef, undef, undef, 0.01);
    }
}

if ($op eq 'admin') {
    my @out;
    for my $js (values %{ $client->get_job_server_status }) {
        push @out, map {"status $_ queued=$js->{$_}{queued} running=$js->{$_}{running} capable=$js->{$_}{capable}"} keys %$js;
    }
    for my $js (values %{ $client->get_job_server_jobs }) {
        push @out, map {"job $_ key=$js->{$_}{key} address=$js->{$_}{address} listeners=$js->{$_}{listeners}"} keys %$js;
    }
    for my $js (values %{ $client->get_job_server_clients }) {
        for my $c (keys %$js) {
            push @out, "client $c";
            push @out, map {"client $c waits $_ key=$js->{$c}{$_}{key} worker=$js->{$c}{$_}{address}"} keys %{ $js->{$c} };
        }
    }
    print map {"$_\n"} sort @out;
    exit 0;
}

if ($op eq 'bgs') {
    my ($func, @jobs) = @args;
    for my $j (@jobs) {
        my ($arg, $pri) = split /@/, $j, 2;
        my $h = $client->dispatch_background($func, $arg, {priority => $pri})
            or die "dispatch_background $arg failed\n";
        print "handle $h\n";
    }
    exit 0;
}

my ($func, $arg) = @args;

if ($op eq 'bg') {
    my $h = $client->dispatch_background($func, $arg, \%opt)
        or die "dispatch_background failed\n";
    print "handle $h\n";
    exit 0;
}

die "unknown op $op\n" unless $op eq 'do';
my $ret = $client->do_task(
    $func, $arg,
    {   %opt,
        on_status    => sub { print "status $_[0]/$_[1]\n" },
        on_data      => sub { print "data ${$_[0]}\n" },
        on_warning   => sub { print "warning ${$_[0]}\n" },
        on_exception => sub { print "exception $_[0]\n" },
        on_fail      => sub { print "fail\n" },
    }
);
print "complete $$ret\n" if defined $ret;
exit(defined $ret ? 0 : 1);
