import functions_framework


@functions_framework.cloud_event
def cleanup(cloud_event):
    print("cleanup", cloud_event["id"])
