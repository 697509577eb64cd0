//! A minimal RESP (Redis protocol) client, for loads and checks that would take thousands of
//! redis-cli runs.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

/// A minimal RESP client, for loads and checks that would take thousands of redis-cli runs.
pub struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Resp {
    pub fn connect(port: u16) -> Resp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Resp {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    pub fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(cmd.as_bytes()).unwrap();
    }

    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.send(args);
        self.read()
    }

    pub fn read(&mut self) -> Reply {
        use std::io::Read;
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (tag, rest) = line.split_at(1);
        match tag {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8(buf).unwrap()))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Reply::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected RESP {other:?}"),
        }
    }

    /// Every key and its string value, sorted by key.
    pub fn dataset(&mut self) -> Vec<(String, String)> {
        let Reply::Array(keys) = self.call(&["KEYS", "*"]) else {
            panic!("KEYS failed")
        };
        let mut keys: Vec<String> = keys
            .into_iter()
            .filter_map(|k| match k {
                Reply::Bulk(Some(k)) => Some(k),
                _ => None,
            })
            .collect();
        keys.sort();
        if keys.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let Reply::Array(vals) = self.call(&args) else {
            panic!("MGET failed")
        };
        keys.into_iter()
            .zip(vals)
            .map(|(k, v)| match v {
                Reply::Bulk(Some(v)) => (k, v),
                other => panic!("{k}: {other:?}"),
            })
            .collect()
    }
}
