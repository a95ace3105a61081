# Sourced by the bench scripts: nginx as the floor, a plain keep-alive reverse proxy with no
# buffering (so streams flow), installed with apt when missing.

# Sets NGINX to the nginx binary, installing it if needed.
nginx_install() {
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || \
     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# nginx_start DIR UPSTREAM_PORT LISTEN_PORT: writes DIR/nginx.conf and starts nginx.
nginx_start() {
  local dir=$1 upstream=$2 listen=$3
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<CONF
worker_processes auto;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
  access_log logs/access.log;
  client_body_temp_path /tmp/nginx_body; proxy_temp_path /tmp/nginx_proxy;
  fastcgi_temp_path /tmp/nginx_fcgi; uwsgi_temp_path /tmp/nginx_uwsgi; scgi_temp_path /tmp/nginx_scgi;
  keepalive_requests 10000000;
  upstream mock { server 127.0.0.1:$upstream; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$listen;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
  "$NGINX" -p "$dir" -c nginx.conf
}

# nginx_stop DIR
nginx_stop() {
  "$NGINX" -p "$1" -c nginx.conf -s stop 2>/dev/null || true
}
