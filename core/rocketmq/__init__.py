"""RocketMQ 5's gRPC protocol (`apache.rocketmq.v2.MessagingService`) as plain
logic: statuses (`codes`), messages and properties (`translate`), routes
(`routes`), the settings exchange (`settings`). The `tailrace proxy` process
(deploy/proxy_main.py) serves it through the thin servicer in `service.py`;
everything else here is tested without sockets."""
