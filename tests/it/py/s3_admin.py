"""Administration of the moto test server that object_store cannot do: IAM set-up
(the three unauthenticated calls moto allows), buckets, listing in-progress multipart
uploads. Prints JSON on stdout."""

import json
import sys

import boto3


def client(service, endpoint, key, secret):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def main():
    command, endpoint = sys.argv[1], sys.argv[2]
    if command == "iam":
        # Unsigned as far as moto cares: these are the INITIAL_NO_AUTH_ACTION_COUNT calls.
        iam = client("iam", endpoint, "bootstrap", "bootstrap")
        iam.create_user(UserName="edgeflow")
        key = iam.create_access_key(UserName="edgeflow")["AccessKey"]
        iam.put_user_policy(
            UserName="edgeflow",
            PolicyName="s3-all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
    elif command == "bucket":
        key, secret, bucket = sys.argv[3:6]
        client("s3", endpoint, key, secret).create_bucket(Bucket=bucket)
        print(json.dumps({"bucket": bucket}))
    elif command == "uploads":
        key, secret, bucket = sys.argv[3:6]
        found = client("s3", endpoint, key, secret).list_multipart_uploads(Bucket=bucket)
        print(json.dumps([u["Key"] for u in found.get("Uploads", [])]))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
