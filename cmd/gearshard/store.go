package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"gearshard/engine"
	"gearshard/engine/queue"
)

// QueueFlags are gearmand's persistent-queue flags.
type QueueFlags struct {
	QueueType            string `short:"q" default:"builtin" help:"Persistent queue for background jobs: builtin (memory only), libsqlite3, Postgres, MySQL, redis, libmemcached."`
	Libsqlite3DB         string `name:"libsqlite3-db" help:"SQLite database file for -q libsqlite3."`
	Libsqlite3Table      string `name:"libsqlite3-table" default:"gearman_queue" help:"SQLite table."`
	StoreQueueOnShutdown bool   `name:"store-queue-on-shutdown" help:"Accepted for gearmand compatibility: gearshard always stores a job before acknowledging it."`
	LibpqConninfo        string `name:"libpq-conninfo" help:"PostgreSQL connection string for -q Postgres."`
	LibpqTable           string `name:"libpq-table" default:"queue" help:"PostgreSQL table."`
	MySQLHost            string `name:"mysql-host" default:"localhost" help:"MySQL/MariaDB host for -q MySQL; localhost is the server's Unix socket (MYSQL_UNIX_PORT, else /run/mysqld/mysqld.sock)."`
	MySQLPort            int    `name:"mysql-port" default:"3306" help:"MySQL port."`
	MySQLUser            string `name:"mysql-user" help:"MySQL user."`
	MySQLPassword        string `name:"mysql-password" help:"MySQL user password."`
	MySQLDB              string `name:"mysql-db" help:"MySQL database."`
	MySQLTable           string `name:"mysql-table" default:"gearman_queue" help:"MySQL table."`
	RedisServer          string `name:"redis-server" default:"127.0.0.1" help:"Redis host for -q redis."`
	RedisPort            int    `name:"redis-port" default:"6379" help:"Redis port."`
	RedisPassword        string `name:"redis-password" help:"Redis password."`
	RedisPrefix          string `name:"redis-prefix" default:"_gear_" help:"Redis key prefix."`
	LibmemcachedServers  string `name:"libmemcached-servers" help:"memcached servers for -q libmemcached: host[:port] (11211), separated by commas."`
	LibmemcachedPrefix   string `name:"libmemcached-prefix" default:"gear_" help:"memcached key prefix."`
}

// openStore opens the persistent queue the flags ask for; nil for builtin.
func (q *QueueFlags) openStore(log zerolog.Logger) (engine.Store, error) {
	switch strings.ToLower(q.QueueType) {
	case "builtin", "":
		return nil, nil
	case "libsqlite3":
		if q.Libsqlite3DB == "" {
			return nil, usagef("-q libsqlite3 needs --libsqlite3-db FILE")
		}
		return asStore(queue.OpenSQLite(q.Libsqlite3DB, q.Libsqlite3Table, log))
	case "postgres":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return asStore(queue.OpenPostgres(ctx, q.LibpqConninfo, q.LibpqTable, log))
	case "mysql":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return asStore(queue.OpenMySQL(ctx, queue.MySQLConfig{Host: q.MySQLHost, Port: q.MySQLPort, User: q.MySQLUser,
			Password: q.MySQLPassword, DB: q.MySQLDB, Table: q.MySQLTable}, log))
	case "redis":
		return asStore(queue.OpenRedis(net.JoinHostPort(q.RedisServer, strconv.Itoa(q.RedisPort)), q.RedisPassword, q.RedisPrefix, log))
	case "libmemcached":
		addrs, err := queue.ParseMemcachedServers(q.LibmemcachedServers)
		if err != nil {
			return nil, usagef("%v", err)
		}
		return asStore(queue.OpenMemcached(addrs, q.LibmemcachedPrefix, log))
	}
	return nil, usagef("--queue-type %q: want builtin, libsqlite3, Postgres, MySQL, redis or libmemcached", q.QueueType)
}

// asStore keeps a failed open from turning into a non-nil interface
// holding a nil pointer.
func asStore[S engine.Store](s S, err error) (engine.Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}
