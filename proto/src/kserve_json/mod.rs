//! KServe v2 REST JSON ⇄ the gRPC messages: `{"inputs": [{"name", "shape", "datatype",
//! "data"}]}` to a `ModelInferRequest` with typed contents (`request`), and a
//! `ModelInferResponse` (typed or raw outputs) and model metadata back to JSON (`response`).
//! Shared by every REST endpoint so they accept and answer the same.

mod request;
mod response;

pub use request::{request_from_json, request_from_json_within};
pub use response::{ResponseJson, metadata_to_json, raw_to_values, response_to_json};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_too_large_to_count_are_refused() {
        let body = br#"{"inputs":[{"name":"b","datatype":"UINT32","shape":[90,7001242390990,702390,70401],"data":[7]}]}"#;
        let e = request_from_json("m", "", body).unwrap_err();
        assert!(e.contains("more elements than can be counted"), "{e}");
    }

    #[test]
    fn decoded_tensors_are_bounded() {
        // 8 bytes per element for each 2 bytes of "0,": refused before it is filled.
        let body =
            br#"{"inputs":[{"name":"x","shape":[100],"datatype":"INT64","data":[0,0,0,0]}]}"#;
        let e = request_from_json_within("m", "", body, 799).unwrap_err();
        assert!(
            e.contains("more than the request limit of 799 bytes"),
            "{e}"
        );
        // BYTES: every element's vector counts.
        let body = br#"{"inputs":[{"name":"b","shape":[40],"datatype":"BYTES","data":["","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","","",""]}]}"#;
        let e = request_from_json_within("m", "", body, 500).unwrap_err();
        assert!(e.contains("request limit"), "{e}");
        assert!(request_from_json_within("m", "", body, 10_000).is_ok());
    }

    #[test]
    fn json_round_trip_and_errors() {
        let r = request_from_json(
            "m",
            "",
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.inputs[0].contents.as_ref().unwrap().fp32_contents,
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let e = request_from_json(
            "m",
            "",
            br#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("'x'") && e.contains("needs 3"), "{e}");
        assert!(
            request_from_json("m", "", b"{")
                .unwrap_err()
                .contains("not a valid KServe v2")
        );
        assert!(
            request_from_json(
                "m",
                "",
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":["a"]}]}"#
            )
            .is_err()
        );
        assert_eq!(raw_to_values("INT64", &5i64.to_le_bytes()), vec![json!(5)]);
        assert_eq!(
            raw_to_values("FP16", &0x3c00u16.to_le_bytes()),
            vec![json!(1.0)]
        );
    }
}
