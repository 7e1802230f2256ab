# A Rack app for rainbowd's soak harness (puma, unicorn): the same answers
# as wsgiapp.py.  It reads VERSION from its working directory once, at boot.
VERSION = File.read("VERSION").strip

run lambda { |env|
  if env["PATH_INFO"] == "/health"
    body = "ok\n"
  else
    seconds = Rack::Utils.parse_query(env["QUERY_STRING"])["sleep"].to_f
    sleep(seconds) if seconds > 0
    body = "#{VERSION} pid=#{Process.pid}\n"
  end
  [200, { "Content-Type" => "text/plain", "Content-Length" => body.bytesize.to_s }, [body]]
}
