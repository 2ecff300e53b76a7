//! JSON read the way Go's `encoding/json` reads it into a struct, because the runtimes and
//! the reference plugins are written in Go and send what Go accepts:
//!
//! - an object key matches a field by its exact name or, failing that, case-insensitively
//!   (containerd's go-cni sends `{"HostPort":18090,"ContainerPort":80,...}`);
//! - when several keys match one field, the last one wins;
//! - `null` leaves a field as it was (absent, for us);
//! - unknown keys are ignored.
//!
//! A document is parsed once into a [`Node`] tree that keeps every key in order (duplicates
//! too), and typed values are decoded from it with these rules at every depth. Errors name
//! the path of the offending value as the input spells it
//! (`runtimeConfig.portMappings[0].HostPort: invalid type: ...`).

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// A parsed JSON document, keys in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Why a value could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The path to the value, as the input spells its keys (empty: the document itself).
    pub path: String,
    pub msg: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError {
            path: String::new(),
            msg: msg.to_string(),
        }
    }
}

impl DecodeError {
    fn under_key(mut self, key: &str) -> Self {
        self.path = match self.path.is_empty() {
            true => key.to_string(),
            false if self.path.starts_with('[') => format!("{key}{}", self.path),
            false => format!("{key}.{}", self.path),
        };
        self
    }

    fn under_index(mut self, index: usize) -> Self {
        self.path = match self.path.is_empty() || self.path.starts_with('[') {
            true => format!("[{index}]{}", self.path),
            false => format!("[{index}].{}", self.path),
        };
        self
    }
}

impl Node {
    /// Parses a JSON document (syntax errors are serde_json's).
    pub fn parse(bytes: &[u8]) -> Result<Node, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Decodes a typed value with Go's rules.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        T::deserialize(self)
    }

    /// The value of `key` in an object, matched as Go matches a field of that name.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(entries) => entries
                .iter()
                .rev()
                .filter(|(_, v)| *v != Node::Null)
                .find(|(k, _)| k == key || (!k.is_empty() && fold_eq(k, key)))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The same document as a `serde_json::Value` (a repeated key keeps its last value).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.clone()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.clone(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }

    fn kind(&self) -> de::Unexpected<'_> {
        match self {
            Node::Null => de::Unexpected::Unit,
            Node::Bool(b) => de::Unexpected::Bool(*b),
            Node::Number(_) => de::Unexpected::Other("number"),
            Node::String(s) => de::Unexpected::Str(s),
            Node::Array(_) => de::Unexpected::Seq,
            Node::Object(_) => de::Unexpected::Map,
        }
    }
}

/// Go's case-insensitive match of a key to a field name (Unicode simple folding, so `K`
/// the Kelvin sign matches `k` and `ſ` matches `s`, as in Go).
fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let fold = |s: &str| -> Vec<char> {
        s.chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect()
    };
    fold(a) == fold(b)
}

/// The field a key fills: the one with exactly that name, else the first it matches
/// case-insensitively; `None` for an unknown key (which a struct ignores).
fn field_for(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .copied()
        .find(|f| *f == key)
        .or_else(|| fields.iter().copied().find(|f| fold_eq(f, key)))
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
                Ok(Number::from_f64(n).map_or(Node::Null, Node::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    entries.push((k, v));
                }
                Ok(Node::Object(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// The entries of an object as a struct sees them: keys resolved to field names, nulls
/// and unknown keys dropped, the last of several keys for one field kept (so there are
/// never more entries than fields).
struct StructEntries<'de> {
    entries: Vec<(&'static str, &'de str, &'de Node)>,
    next: usize,
}

impl<'de> StructEntries<'de> {
    fn new(entries: &'de [(String, Node)], fields: &'static [&'static str]) -> Self {
        let mut out: Vec<(&'static str, &'de str, &'de Node)> = Vec::with_capacity(fields.len());
        for (key, value) in entries {
            if *value == Node::Null {
                continue;
            }
            let Some(field) = field_for(key, fields) else {
                continue;
            };
            match out.iter_mut().find(|(f, _, _)| *f == field) {
                Some(slot) => *slot = (field, key, value),
                None => out.push((field, key, value)),
            }
        }
        StructEntries {
            entries: out,
            next: 0,
        }
    }
}

impl<'de> MapAccess<'de> for StructEntries<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((field, _, _)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::BorrowedStrDeserializer<'de, DecodeError> =
            de::value::BorrowedStrDeserializer::new(field);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (_, key, value) = self.entries[self.next];
        self.next += 1;
        seed.deserialize(value).map_err(|e| e.under_key(key))
    }
}

/// The entries of an object read as a map (keys as they are, every entry in order).
struct MapEntries<'de> {
    entries: std::slice::Iter<'de, (String, Node)>,
    value: Option<(&'de str, &'de Node)>,
}

impl<'de> MapAccess<'de> for MapEntries<'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        let key: de::value::BorrowedStrDeserializer<'de, DecodeError> =
            de::value::BorrowedStrDeserializer::new(key);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a map value without its key"))?;
        seed.deserialize(value).map_err(|e| e.under_key(key))
    }
}

struct Items<'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
}

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            Some((i, item)) => seed
                .deserialize(item)
                .map(Some)
                .map_err(|e| e.under_index(i)),
            None => Ok(None),
        }
    }
}

impl<'de> Deserializer<'de> for &'de Node {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Number(n) => n
                .deserialize_any(visitor)
                .map_err(|e| de::Error::custom(e.to_string())),
            Node::String(s) => visitor.visit_borrowed_str(s),
            Node::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
            }),
            Node::Object(entries) => visitor.visit_map(MapEntries {
                entries: entries.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self {
            Node::Object(entries) => visitor.visit_map(StructEntries::new(entries, fields)),
            other => Err(de::Error::invalid_type(other.kind(), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self {
            Node::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(de::Error::invalid_type(other.kind(), &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Mapping {
        host_port: u32,
        container_port: u32,
        #[serde(default)]
        protocol: String,
        #[serde(default, rename = "hostIP")]
        host_ip: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Runtime {
        #[serde(default)]
        port_mappings: Vec<Mapping>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Conf {
        #[serde(default)]
        runtime_config: Option<Runtime>,
        #[serde(default)]
        mtu: u32,
        #[serde(default)]
        extra: Option<Value>,
    }

    fn decode<T: DeserializeOwned>(json: &str) -> Result<T, DecodeError> {
        Node::parse(json.as_bytes()).expect("json").decode()
    }

    #[test]
    fn keys_match_exactly_or_case_insensitively_at_every_depth() {
        let go_cni = r#"{"RuntimeConfig":{"portMappings":[
            {"HostPort":18090,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]}}"#;
        let conf: Conf = decode(go_cni).expect("containerd's shape");
        let m = &conf.runtime_config.expect("runtimeConfig").port_mappings[0];
        assert_eq!((m.host_port, m.container_port), (18090, 80));
        assert_eq!(m.protocol, "tcp");
        let podman = r#"{"runtimeConfig":{"portMappings":[
            {"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}}"#;
        let conf: Conf = decode(podman).expect("podman's shape");
        assert_eq!(
            conf.runtime_config.expect("rc").port_mappings[0].host_ip,
            "127.0.0.1"
        );
        // Go's folding is Unicode's: the Kelvin sign is a k, the long s an s.
        assert_eq!(decode::<Conf>(r#"{"MTU":9}"#).expect("upper").mtu, 9);
        assert!(fold_eq("\u{212a}ey", "key") && fold_eq("\u{17f}nat", "SNAT"));
    }

    #[test]
    fn the_last_key_wins_and_null_changes_nothing() {
        let c: Conf = decode(r#"{"mtu":1,"MTU":2,"Mtu":3}"#).expect("dups");
        assert_eq!(c.mtu, 3);
        let c: Conf = decode(r#"{"mtu":1,"mtu":null}"#).expect("null");
        assert_eq!(c.mtu, 1);
        let c: Conf = decode(r#"{"mtu":null}"#).expect("null alone");
        assert_eq!(c.mtu, 0);
        // An exact match takes precedence over a folded one for that key only.
        let node = Node::parse(br#"{"Mtu":5,"mtu":4}"#).expect("json");
        assert_eq!(node.get("mtu"), Some(&Node::Number(4.into())));
    }

    #[test]
    fn unknown_keys_are_ignored_and_kept_in_order() {
        let node = Node::parse(br#"{"zeta":1,"mtu":7,"alpha":{"B":2,"a":1}}"#).expect("json");
        let c: Conf = node.decode().expect("ignored");
        assert_eq!(c.mtu, 7);
        let Node::Object(entries) = &node else {
            panic!("object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["zeta", "mtu", "alpha"]);
        assert_eq!(node.to_value()["alpha"]["B"], 2);
        let free: Conf = decode(r#"{"extra":{"Any":[1,"x",null]}}"#).expect("values");
        assert_eq!(free.extra.expect("extra")["Any"][1], "x");
    }

    #[test]
    fn errors_name_the_path_as_spelled() {
        let e = decode::<Conf>(
            r#"{"runtimeConfig":{"PortMappings":[{"HostPort":"x","ContainerPort":80}]}}"#,
        )
        .expect_err("wrong type");
        assert_eq!(e.path, "runtimeConfig.PortMappings[0].HostPort");
        assert!(e.msg.contains("invalid type: string \"x\""), "{e}");
        let e = decode::<Conf>(r#"{"runtimeConfig":{"portMappings":[{"hostPort":1}]}}"#)
            .expect_err("missing");
        assert_eq!(
            e.to_string(),
            "runtimeConfig.portMappings[0]: missing field `containerPort`"
        );
        let e = decode::<Conf>(r#"{"mtu":-1}"#).expect_err("negative");
        assert_eq!(e.path, "mtu");
        let e = decode::<Conf>(r#"[1]"#).expect_err("not an object");
        assert!(
            e.path.is_empty() && e.msg.contains("invalid type: sequence"),
            "{e}"
        );
    }
}
